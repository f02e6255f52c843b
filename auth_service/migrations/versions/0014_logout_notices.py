"""logout_notices: ended application sessions to announce at their back-channel logout URI

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 22:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import common.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "logout_notices",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("failed_at", common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_index(
        op.f("ix_logout_notices_created_at"), "logout_notices", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_logout_notices_next_attempt_at"),
        "logout_notices",
        ["next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_logout_notices_next_attempt_at"), table_name="logout_notices")
    op.drop_index(op.f("ix_logout_notices_created_at"), table_name="logout_notices")
    op.drop_table("logout_notices")

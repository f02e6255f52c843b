"""signup_requests: a sign-up is answered once accepted, and carried out after

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import common.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signup_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("send", sa.Boolean(), nullable=False),
        sa.Column("accepted_at", common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_signup_requests_accepted_at"), "signup_requests", ["accepted_at"], unique=False
    )
    op.create_index(op.f("ix_signup_requests_email"), "signup_requests", ["email"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_signup_requests_email"), table_name="signup_requests")
    op.drop_index(op.f("ix_signup_requests_accepted_at"), table_name="signup_requests")
    op.drop_table("signup_requests")

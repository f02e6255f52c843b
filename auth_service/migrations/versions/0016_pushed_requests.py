"""pushed_requests: authorization requests clients push before sending the browser (RFC 9126)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import common.db

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pushed_requests",
        sa.Column("uri_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("pushed_at", common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uri_hash"),
    )
    op.create_index(
        op.f("ix_pushed_requests_expires_at"), "pushed_requests", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pushed_requests_expires_at"), table_name="pushed_requests")
    op.drop_table("pushed_requests")

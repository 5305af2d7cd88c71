"""multi-seed suites: suites (configurations and seeds) and suite_children (one job per configuration × seed)

A suite's state is derived from its children's jobs; the rows only record what was asked for and
which job runs each configuration × seed (docs/suites.md).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "suites",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("configs", JSONType, nullable=False),
        sa.Column("seeds", JSONType, nullable=False),
        sa.Column("children_expected", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_suites_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suites")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_suites_tenant_id_idempotency_key")),
    )
    op.create_index("ix_suites_tenant_created", "suites", ["tenant_id", "created_at", "id"], unique=False)
    op.create_table(
        "suite_children",
        sa.Column("suite_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("config_index", sa.Integer(), nullable=False),
        sa.Column("seed_index", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_suite_children_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["suite_id"], ["suites.id"], name=op.f("fk_suite_children_suite_id_suites"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("suite_id", "position", name=op.f("pk_suite_children")),
        sa.UniqueConstraint("job_id", name=op.f("uq_suite_children_job_id")),
    )


def downgrade() -> None:
    op.drop_table("suite_children")
    op.drop_index("ix_suites_tenant_created", table_name="suites")
    op.drop_table("suites")

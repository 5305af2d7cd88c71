"""uploaded models and probe data: blobs stored in chunks, uploaded_models, uploaded_data

A blob is a tenant's file, content-addressed by sha256 (unique per tenant) and stored as
``blob_chunks`` rows of about 1 MiB, so every worker reads it from the database and nothing holds a
whole file in memory. Models and data sets reference a blob; several may share one.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_blobs_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blobs")),
        sa.UniqueConstraint("tenant_id", "sha256", name=op.f("uq_blobs_tenant_id_sha256")),
    )
    op.create_table(
        "blob_chunks",
        sa.Column("blob_id", BigId, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name=op.f("fk_blob_chunks_blob_id_blobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("blob_id", "seq", name=op.f("pk_blob_chunks")),
    )
    for table, extra in (("uploaded_models", [sa.Column("format", sa.String(length=32), nullable=False),
                                              sa.Column("declared", JSONType, nullable=False)]),
                         ("uploaded_data", [])):
        op.create_table(
            table,
            sa.Column("id", sa.String(length=36), nullable=False),
            sa.Column("tenant_id", sa.Integer(), nullable=False),
            sa.Column("blob_id", BigId, nullable=False),
            sa.Column("name", sa.String(length=200), nullable=True),
            *extra,
            sa.Column("info", JSONType, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name=op.f(f"fk_{table}_blob_id_blobs")),
            sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"),
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_tenant_created", table, ["tenant_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    for table in ("uploaded_data", "uploaded_models"):
        op.drop_index(f"ix_{table}_tenant_created", table_name=table)
        op.drop_table(table)
    op.drop_table("blob_chunks")
    op.drop_table("blobs")

"""reports stored serialised, in parts: report_parts; reports.body replaced by size, sha256, sections, snapshots

The API streams a report from its parts instead of loading a JSON document into Python objects per
request (jobs/reports.py). Existing reports are converted, one at a time, both ways.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

_reports = sa.table("reports", sa.column("job_id", sa.String()), sa.column("body", JSONType),
                    sa.column("size", sa.BigInteger()), sa.column("sha256", sa.String()),
                    sa.column("sections", JSONType), sa.column("snapshots", sa.Integer()))
_parts = sa.table("report_parts", sa.column("job_id", sa.String()), sa.column("seq", sa.Integer()),
                  sa.column("section", sa.String()), sa.column("snapshot", sa.Integer()),
                  sa.column("data", sa.LargeBinary()))


def upgrade() -> None:
    from jobs.reports import split

    # The parts' foreign key comes last: on SQLite (foreign keys on) the batch rebuild of ``reports``
    # below drops the old table, which would cascade to parts that already referenced it.
    op.create_table(
        "report_parts",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("section", sa.String(length=200), nullable=False),
        sa.Column("snapshot", sa.Integer(), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_report_parts")),
    )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sections", JSONType, nullable=True))
        batch_op.add_column(sa.Column("snapshots", sa.Integer(), nullable=True))
    bind = op.get_bind()
    for (job_id,) in bind.execute(sa.select(_reports.c.job_id)).all():  # one report in memory at a time
        body = bind.execute(sa.select(_reports.c.body).where(_reports.c.job_id == job_id)).scalar_one()
        layout, parts = split(body)
        bind.execute(_reports.update().where(_reports.c.job_id == job_id).values(
            size=layout.size, sha256=layout.sha256, sections=layout.sections, snapshots=layout.snapshots))
        if parts:
            bind.execute(_parts.insert(), [{"job_id": job_id, "seq": i, "section": p.section, "snapshot": p.snapshot,
                                            "data": p.data} for i, p in enumerate(parts)])
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.alter_column("size", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("sections", existing_type=JSONType, nullable=False)
        batch_op.drop_column("body")
    with op.batch_alter_table("report_parts", schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f("fk_report_parts_job_id_reports"), "reports", ["job_id"], ["job_id"],
                                    ondelete="CASCADE")


def downgrade() -> None:
    import json

    from jobs.reports import Part, frame

    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body", JSONType, nullable=True))
    bind = op.get_bind()
    for job_id, sections, snapshots in bind.execute(
            sa.select(_reports.c.job_id, _reports.c.sections, _reports.c.snapshots)).all():
        rows = bind.execute(sa.select(_parts.c.section, _parts.c.snapshot, _parts.c.data)
                            .where(_parts.c.job_id == job_id).order_by(_parts.c.seq)).all()
        parts = iter([Part(r.section, r.snapshot, bytes(r.data)) for r in rows])
        body = json.loads(b"".join(frame(sections, snapshots is not None, parts)))
        bind.execute(_reports.update().where(_reports.c.job_id == job_id).values(body=body))
    op.drop_table("report_parts")  # before the rebuild of ``reports`` (see upgrade)
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.alter_column("body", existing_type=JSONType, nullable=False)
        batch_op.drop_column("snapshots")
        batch_op.drop_column("sections")
        batch_op.drop_column("sha256")
        batch_op.drop_column("size")

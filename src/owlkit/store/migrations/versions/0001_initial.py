"""The first catalog: artifacts, files, tags, edges.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("digest", sa.String(71), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("license", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "files",
        sa.Column(
            "artifact", sa.String(71), sa.ForeignKey("artifacts.digest", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_table(
        "tags",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Column(
            "digest", sa.String(71), sa.ForeignKey("artifacts.digest", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tags_digest", "tags", ["digest"])
    op.create_table(
        "edges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "child", sa.String(71), sa.ForeignKey("artifacts.digest", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.Column("parent", sa.String(71), nullable=True),
        sa.Column("parent_ref", sa.String(500), nullable=True),
    )
    op.create_index("ix_edges_child", "edges", ["child"])
    op.create_index("ix_edges_parent", "edges", ["parent"])


def downgrade() -> None:
    for name in ("edges", "tags", "files", "artifacts"):
        op.drop_table(name)

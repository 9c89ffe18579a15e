"""accounts and the client API: verifications, auth log, abuse flags, events, exports,
suspension and referral on users, token last use, message conversations

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("referral_code", sa.String(length=40), nullable=True))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("conversation", sa.String(length=254), nullable=True))
        batch_op.create_index(
            "ix_messages_user_conversation_id", ["user_id", "conversation", "id"], unique=False
        )
    # Existing SMS/MMS rows: the counterpart is the sender of what came in and the
    # recipient of what went out. Email threads are filled in by their ingest path.
    op.execute(
        "UPDATE messages SET conversation = CASE WHEN direction = 'outbound' "
        "THEN recipient ELSE sender END WHERE channel IN ('sms', 'mms')"
    )

    op.create_table(
        "verifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        _user_fk("verifications"),
        sa.PrimaryKeyConstraint("id", name="pk_verifications"),
    )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index("ix_verifications_user_id", ["user_id"], unique=False)
        batch_op.create_index(
            "ix_verifications_phone_created_at", ["phone", "created_at"], unique=False
        )

    op.create_table(
        "auth_log",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        _user_fk("auth_log"),
        sa.PrimaryKeyConstraint("id", name="pk_auth_log"),
    )
    with op.batch_alter_table("auth_log", schema=None) as batch_op:
        batch_op.create_index("ix_auth_log_user_id_id", ["user_id", "id"], unique=False)
        batch_op.create_index("ix_auth_log_created_at", ["created_at"], unique=False)

    op.create_table(
        "abuse_flags",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_abuse_flags"),
        sa.UniqueConstraint("ip", "reason", name="uq_abuse_flags_ip_reason"),
    )

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _user_fk("events"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_user_id_id", ["user_id", "id"], unique=False)
        batch_op.create_index("ix_events_created_at", ["created_at"], unique=False)

    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        _user_fk("exports"),
        sa.PrimaryKeyConstraint("id", name="pk_exports"),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index("ix_exports_user_id", ["user_id"], unique=False)


def downgrade() -> None:
    for table in ("exports", "events", "abuse_flags", "auth_log", "verifications"):
        op.drop_table(table)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_user_conversation_id")
        batch_op.drop_column("conversation")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("referral_code")
        batch_op.drop_column("suspended_at")

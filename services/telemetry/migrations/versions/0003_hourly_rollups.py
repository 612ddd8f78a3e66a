"""Hourly rollups beside the per-minute ones: a week's summary reads ~170 hours instead of ~10,000 minutes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _hour() -> sa.Column:
    return sa.Column("hour", sa.DateTime(timezone=True), primary_key=True)


def _key(name: str) -> sa.Column:
    return sa.Column(name, sa.Text(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "render_hours",
        _hour(),
        _key("platform"),
        _key("plugin_version"),
        _key("status"),
        sa.Column("renders", sa.Integer(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "request_hours",
        _hour(),
        _key("platform"),
        _key("plugin_version"),
        _key("method"),
        _key("route"),
        sa.Column("status", sa.Integer(), primary_key=True),
        _key("error_code"),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.create_table(
        "latency_hours",
        _hour(),
        _key("metric"),
        _key("dim1"),
        _key("dim2"),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table("webhook_hours", _hour(), _key("outcome"), sa.Column("count", sa.Integer(), nullable=False))
    op.create_table("active_users_hours", _hour(), _key("platform"), _key("plugin_version"), _key("user_id"))
    # Hours already rolled up per minute (an existing deployment) are rolled up per hour once here.
    hour = "date_trunc('hour', minute, 'UTC')"
    op.execute(
        f"INSERT INTO render_hours SELECT {hour}, platform, plugin_version, status, sum(renders), sum(credits) "
        "FROM render_minutes GROUP BY 1, 2, 3, 4"
    )
    op.execute(
        f"INSERT INTO request_hours SELECT {hour}, platform, plugin_version, method, route, status, error_code, "
        "sum(requests) FROM request_minutes GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    op.execute(
        f"INSERT INTO latency_hours SELECT {hour}, metric, dim1, dim2, bucket, sum(count) FROM latency_minutes "
        "GROUP BY 1, 2, 3, 4, 5"
    )
    op.execute(f"INSERT INTO webhook_hours SELECT {hour}, outcome, sum(count) FROM webhook_minutes GROUP BY 1, 2")
    op.execute(
        f"INSERT INTO active_users_hours SELECT DISTINCT {hour}, platform, plugin_version, user_id FROM active_users"
    )


def downgrade() -> None:
    for table in ("active_users_hours", "webhook_hours", "latency_hours", "request_hours", "render_hours"):
        op.drop_table(table)

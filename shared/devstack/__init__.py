"""``make run``: embedded engines, migrations, topics, then every process of the platform, stopped together."""

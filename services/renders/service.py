"""Business logic of the renders service: functions over a session that flush and never commit.

Filled in with renders and projects (renders issue).
"""

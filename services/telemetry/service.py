"""Business logic of the telemetry service: functions over a session that flush and never commit.

Filled in with the operator summary and dashboard (telemetry issue).
"""

"""Kafka wiring of the telemetry service: subscribers and publishers only, delegating to ``service``.

Filled in with the operator summary and dashboard (telemetry issue).
"""

"""Kafka wiring of the gateway: ``apikey.events`` (cache invalidation) and ``gateway.requests`` (telemetry).

Both arrive with the identity and telemetry issues; the gateway publishes nothing on the request path.
"""

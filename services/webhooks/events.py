"""Kafka wiring of the webhooks service: subscribers and publishers only, delegating to ``service``.

Filled in with webhook registration and the delivery log (webhooks issue).
"""

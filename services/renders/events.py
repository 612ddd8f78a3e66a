"""Kafka wiring of the renders service: subscribers and publishers only, delegating to ``service``.

Filled in with renders and projects (renders issue).
"""

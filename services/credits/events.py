"""Kafka wiring of the credits service: subscribers and publishers only, delegating to ``service``.

Filled in with balances, ledger and reservations (renders issue).
"""

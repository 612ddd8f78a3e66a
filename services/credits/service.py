"""Business logic of the credits service: functions over a session that flush and never commit.

Filled in with balances, ledger and reservations (renders issue).
"""

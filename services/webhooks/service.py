"""Business logic of the webhooks service: functions over a session that flush and never commit.

Filled in with webhook registration and the delivery log (webhooks issue).
"""

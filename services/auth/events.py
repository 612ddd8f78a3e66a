"""Kafka wiring of the auth service: subscribers and publishers only, delegating to ``service``.

Filled in with signup, signin, refresh, signout, me, API keys and JWKS (identity issue).
"""

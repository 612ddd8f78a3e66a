"""Business logic of the auth service: functions over a session that flush and never commit.

Filled in with signup, signin, refresh, signout, me, API keys and JWKS (identity issue).
"""

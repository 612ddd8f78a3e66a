"""auth service: Accounts, access and refresh tokens, API keys, JWKS, key verification for the gateway."""

"""credits service: Balances and an append-only ledger: reserve on create, capture/release on render events."""

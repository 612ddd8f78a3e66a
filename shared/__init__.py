"""Common code of the platform's services: settings, logging, DB, errors, identity, events, outbox, storage."""

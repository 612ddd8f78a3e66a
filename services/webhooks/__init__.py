"""webhooks service: Webhook registrations and delivery log;
the dispatcher (second entry point) delivers render events."""

"""telemetry service: Operator statistics aggregated from render and gateway events."""

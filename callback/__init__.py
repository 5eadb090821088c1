"""The `callback` runtime: CLI entry point, settings and shared plumbing (logging, Kafka clients)."""

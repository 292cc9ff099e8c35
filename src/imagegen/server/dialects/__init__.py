"""The HTTP dialects: one core (:mod:`.core`), then each dialect's schemas, field names and thin routes."""

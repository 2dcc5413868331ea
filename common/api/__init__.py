"""What every app's REST API shares: UUID routes, the 409 and the error handler, the bounded
JSON parser and the per-action rate limits (the last three are DRF defaults in settings)."""

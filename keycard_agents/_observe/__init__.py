"""Observability: OpenTelemetry spans and W3C trace context propagation."""

"""OTLP export: session files as OpenTelemetry logs over HTTP (docs/scale-out.md)."""

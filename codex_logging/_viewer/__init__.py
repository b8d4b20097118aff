"""The web viewer of the mirror: ``codex-logs serve`` (docs/viewer.md)."""

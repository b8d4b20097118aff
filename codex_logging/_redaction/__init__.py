"""Redaction of secrets, used by the write side and by the mirror (see docs/redaction.md)."""

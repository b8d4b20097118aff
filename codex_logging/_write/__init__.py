"""The write side: everything a program that only logs loads (see ARCHITECTURE.md)."""

"""The SQLite mirror: database, sync target, reads and pruning."""

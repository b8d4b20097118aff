"""The PostgreSQL team mirror: the only place psycopg is imported (see docs/scale-out.md)."""

"""The backend-neutral mirror engine: line parsing, the target contracts, filters, retiring."""

"""Use cases: load, call the domain, write. Services flush, never commit."""

"""lookup_tables."""

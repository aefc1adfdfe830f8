"""The life of a use case's model after cutover: aliases (live, candidate, previous), their store and moves."""

"""Example use cases: simulated data, features and trainers that show the toolkit end to end."""

"""Real-time item availability: a grocery simulator, its batch features and its trainer."""

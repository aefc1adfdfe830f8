"""The skeleton both examples share: simulation scaffolding, the offline-store writer, day-end feature SQL and the
trainer on a window of days; each example keeps only its world, its tables, its features and its model."""

"""Delivery ETA: a food-delivery simulator with kitchen load that moves during the day, and a regression trainer."""

"""Fraud detection: card authorizations and the chargebacks that dispute them days later, and a binary trainer."""

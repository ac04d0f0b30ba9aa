"""Patron integrations."""

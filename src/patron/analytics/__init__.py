"""Patron analytics."""

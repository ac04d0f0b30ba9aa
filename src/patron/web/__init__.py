"""Patron web."""

"""Sesame proxy."""

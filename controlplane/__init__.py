"""Sesame controlplane."""

"""Sesame development kit: the local cluster issuer, demo upstream, and `make demo`."""

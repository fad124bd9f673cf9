"""Talos API messages and grpclib stubs generated from src/*.proto by generate.py (do not edit)."""

"""A local, Talos-API-compatible simulated cluster (`trustplan sim`)."""

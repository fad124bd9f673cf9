"""Adapters between trustplan and the world: files on disk, the Talos API, the Kubernetes API, the simulator."""

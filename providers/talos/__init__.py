"""The Talos provider: the real Talos API over gRPC (grpclib) and mutual TLS."""

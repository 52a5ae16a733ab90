"""The seven gRPC services, one package each, never importing each other."""

"""Adapters: the domain's ports implemented on real technology (PostgreSQL, Redis, gRPC...)."""

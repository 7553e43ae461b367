"""Defaults shared by the SDK and its CLI (kept free of gRPC imports)."""

DEFAULT_TARGET = "127.0.0.1:50052"

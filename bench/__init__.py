"""Benchmarks: each prints ops/s and a ratio against a peer measured in the same run."""

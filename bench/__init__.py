"""Benchmarks that drive the whole suite as processes (`python -m bench.e2e`)."""

"""Benchmarks: run on demand, print figures, write JSON to bench/results/. Never timed asserts."""

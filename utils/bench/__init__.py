"""Benchmarks behind ``scripts/benchmark.py``: the harness and the timed runs."""

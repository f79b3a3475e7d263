"""Benchmarks: scripts that run our code and a peer side by side and write JSON, PNG and results.md."""

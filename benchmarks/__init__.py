"""Evaluation engine, experiment definitions, result store, rendering and speed benchmarks."""

"""Speed and memory benchmarks, each measured against a reference in the same run."""

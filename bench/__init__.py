"""dsr-pipeline benchmarks: see bench/README.md."""

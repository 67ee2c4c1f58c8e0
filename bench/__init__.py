"""dsr-pipeline benchmarks (issue 9): see bench/README.md."""

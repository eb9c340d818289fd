"""The latency harness behind `staredge bench` (see docs/benchmarks.md)."""

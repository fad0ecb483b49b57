"""Benchmarks (`vxlab bench …`): measured figures written to files, never asserted in tests."""

"""Benchmarks that print figures and ratios to a baseline measured in the same run."""

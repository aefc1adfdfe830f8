"""Benchmarks (`make bench`): measured in one run, results to bench/results/ and docs/benchmarks.md."""

"""Benchmarks of the booking system (`python -m bench`, `make bench`); see docs/benchmarks.md."""

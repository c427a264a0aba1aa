"""Benchmarks: transport round trips (`python -m harness.bench`), the closed loop's overhead
and server capacity (`python -m harness.bench.loop`), codec cost (`python -m
harness.bench.codec`) and golden parity (`python -m harness.bench.parity`)."""

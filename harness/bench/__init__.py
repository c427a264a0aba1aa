"""Benchmarks: transport round trips (`python -m harness.bench`), the closed loop's overhead
and server capacity (`python -m harness.bench.loop`), codec cost (`python -m
harness.bench.codec`), golden parity (`python -m harness.bench.parity`) and the long fuzz
of hostile messages (`python -m harness.bench.fuzz`, its mutator in `mutations`).

Shared by them: `timing` (how a call is timed, a row of samples), `payloads` (the fixed
observation and action chunk), `child` (a far end in its own process, READY handshake).
Which transports a benchmark runs by default comes from `transports.registry`."""

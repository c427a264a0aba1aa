"""The policy server (`python -m harness.server`): sessions, the inference thread, metrics
and health, and the supervisor that starts, stops, kills and restarts its process."""

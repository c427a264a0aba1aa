"""The closed loop: the clock and latency models, the episode runner and its invariant
checks, and the jobs that drive them (`job.py`, and `evaluate.py` in-process)."""

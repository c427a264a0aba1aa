"""robot-policy-harness: a closed-loop benchmark for remote robot-policy inference.

`python -m harness` is the entry point (`__main__.py`, config shape in `config.py`); each
folder holds one job: protocol/ (wire schema and the contract), client/ (the robot-side
engine), server/ (the policy server and its supervisor), loop/ (clock, runner, invariants,
the loop job), results/ (run directory and statistics), bench/ (benchmarks and parity).
"""

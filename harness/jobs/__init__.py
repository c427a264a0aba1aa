"""Jobs: what `python -m harness job=...` runs, each composing the layers below it (the
closed loop, the in-process evaluation)."""

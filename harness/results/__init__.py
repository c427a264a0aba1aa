"""What a run leaves behind: the run directory's episode rows, traces, events and summary
(`store.py`), and the statistics they share (`stats.py`)."""

"""The robot side of remote inference: the client engine, its fail-safe states and its
action queue. Start with `engine.py` (the control tick); `session.py` opens and re-opens the
session, `modes.py` holds the execution modes, `harness.protocol.checks` decides which chunk
is merged where; `config.py` lists every `client.*` setting."""

"""The robot side of remote inference: the client engine, its fail-safe states and its
action queue. Start with `engine.py`; `config.py` lists every `client.*` setting."""

"""A benchmark's far end as a child process: started with a command line, ready once it
prints READY, stopped by closing its stdin (killed if it lingers). The transport peers
(`harness.bench.peer`) and the adapter hop's policy server (`harness.bench.peers hop`) both
speak this handshake, so a wait is bounded the same way for each."""

from __future__ import annotations

import subprocess
import threading

READY_TIMEOUT_S = 30.0
"""How long a child may take to print READY (a policy server with imports: seconds)."""
STOP_TIMEOUT_S = 10.0
"""How long a child may take to exit once its stdin closes, before it is killed."""


class ReadyProcess:
    """A child that prints READY once serving and exits when its stdin closes."""

    def __init__(self, command: list[str], what: str, *,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start `command` and block until it prints READY.

        Raises:
            RuntimeError: no READY line within `ready_timeout_s` (or it exited first); names
                `what`. The child is stopped first.
        """
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(ready_timeout_s)
        if not ready or ready[0].strip() != "READY":
            self.stop()
            raise RuntimeError(f"{what} did not become ready within {ready_timeout_s} s")

    def stop(self) -> None:
        """Close the child's stdin and wait for it; kill it after `STOP_TIMEOUT_S`.
        Idempotent."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

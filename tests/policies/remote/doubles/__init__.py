"""Test doubles of the HTTP model servers the OpenVLA-family adapters talk to: OpenVLA's
`deploy.py`, an AutoEval policy server, SGLang's `/generate`. Each keeps its real
counterpart's routes, wire format and error conventions but runs a dummy model, because this
machine has no GPU and no 7B weights. They run in-process (uvicorn in a thread) on a
loopback port the OS picks, and can be stopped and restarted on the same port.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import uvicorn

from transports.loopback import free_port


def dummy_action(image: np.ndarray, instruction: str) -> np.ndarray:
    """The dummy model: a (7,) float64 action fixed by the image mean and the instruction
    length, so a test can compute the expected action from its own input."""
    mean = float(image.astype(np.float64).mean())
    length = len(instruction)
    return np.array([mean / 255.0, length / 100.0, -mean / 255.0, 0.25, -0.5, 0.125,
                     float(length % 2)])


class ServerThread:
    """One uvicorn server for an ASGI app on 127.0.0.1, in a daemon thread."""

    def __init__(self, app, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        """Serve on `port` and return once uvicorn listens; fails after `timeout_s`."""
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name=f"uvicorn-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn on port {self.port} exited before listening")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn on port {self.port} not listening after "
                                   f"{timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving (closes every connection) and wait for the thread; idempotent."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout_s)
        self._server = self._thread = None

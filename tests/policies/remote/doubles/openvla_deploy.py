"""Test double of OpenVLA's `vla-scripts/deploy.py` (openvla/openvla): the same `POST /act`
route and wire (json-numpy, decoded and encoded with the real json-numpy package, as
deploy.py's `json_numpy.patch()` does), the same reply (the bare action array, as
`JSONResponse(action)` writes it) and the same error convention (HTTP 200 with the JSON
string "error"), around `dummy_action` instead of OpenVLA-7B: no GPU or 7B weights here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import json_numpy
import numpy as np
from fastapi import FastAPI, Request, Response

from tests.policies.remote.doubles import dummy_action

MODES = ("ok", "error", "http500", "slow", "wrong_shape", "nan")


def json_numpy_response(content: object, status_code: int = 200) -> Response:
    """What Starlette's `JSONResponse(content)` writes once json-numpy has patched `json`."""
    body = json_numpy.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                            separators=(",", ":"))
    return Response(body.encode(), status_code=status_code, media_type="application/json")


@dataclass
class Received:
    """One request as the server decoded it, and the client's (host, port)."""

    payload: dict
    client: tuple[str, int]


@dataclass
class DeployDouble:
    """The server's state: `mode` picks the reply (one of `MODES`), `requests` records
    what arrived."""

    mode: str = "ok"
    delay_s: float = 1.0
    """How long `slow` waits before answering."""
    requests: list[Received] = field(default_factory=list)

    def set_mode(self, mode: str) -> None:
        """Answer the next requests as `mode`."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not in {MODES}")
        self.mode = mode

    def app(self) -> FastAPI:
        """The ASGI app (one route, as deploy.py's `OpenVLAServer.run`)."""
        app = FastAPI()

        @app.post("/act")
        async def act(request: Request):
            try:
                payload = json_numpy.loads(await request.body())
                self.requests.append(Received(payload, tuple(request.client)))
                image, instruction = payload["image"], payload["instruction"]
                action = dummy_action(image, instruction)
            except Exception:  # deploy.py: a bare `except:` that logs and answers "error"
                return "error"
            if self.mode == "error":
                return "error"
            if self.mode == "http500":
                return Response("Internal Server Error", status_code=500)
            if self.mode == "slow":
                await asyncio.sleep(self.delay_s)
            if self.mode == "wrong_shape":
                action = action[:6]
            if self.mode == "nan":
                action = action.copy()
                action[2] = np.nan
            return json_numpy_response(action)

        return app

"""Test double of an AutoEval policy server (zhouzypaul/auto_eval
`auto_eval/policy_server/template.py` and the gist's `template_advanced.py`): `GET /health`,
`POST /reset` (clears the episode state), `POST /act` taking `{"image", "instruction",
"proprio"?}` and answering the bare action array (or a chunk of them), errors as FastAPI
`HTTPException`s. A dummy model replaces the policy: no GPU or 7B weights here.

Its action shows what the server saw: `dummy_action` of image and instruction, with axis 5
replaced by the number of `/act` calls since the last reset and axis 6 by the sum of the
proprio (-1 without one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import json_numpy
import numpy as np
from fastapi import FastAPI, HTTPException, Request

from tests.policies.remote.doubles import dummy_action
from tests.policies.remote.doubles.openvla_deploy import Received, json_numpy_response

MODES = ("ok", "http500", "slow", "unhealthy", "reset_fails")


@dataclass
class AutoEvalDouble:
    """The server's state and switches."""

    chunk_size: int = 1
    """Actions per reply: 1 answers a (7,) array, more a (chunk_size, 7) chunk."""
    reply_form: str = "bare"
    """`bare` (what AutoEval's servers send) or `dict` (`{"action": ...}`, their docstring)."""
    has_reset: bool = True
    """False: no /reset route (FastAPI answers 404)."""
    mode: str = "ok"
    delay_s: float = 1.0
    steps_since_reset: int = 0
    resets: int = 0
    requests: list[Received] = field(default_factory=list)

    def set_mode(self, mode: str) -> None:
        """Answer the next requests as `mode`."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not in {MODES}")
        self.mode = mode

    def action(self, payload: dict) -> np.ndarray:
        """The (7,) action for one request, recording the episode step."""
        action = dummy_action(payload["image"], payload["instruction"])
        action[5] = self.steps_since_reset
        proprio = payload.get("proprio")
        action[6] = -1.0 if proprio is None else float(np.asarray(proprio).sum())
        self.steps_since_reset += 1
        return action

    def app(self) -> FastAPI:
        """The ASGI app with the template's routes."""
        app = FastAPI()

        @app.get("/health")
        async def health():
            if self.mode == "unhealthy":
                raise HTTPException(status_code=503, detail="model not loaded")
            return {"status": "healthy"}

        if self.has_reset:
            @app.post("/reset")
            async def reset():
                if self.mode == "reset_fails":
                    raise HTTPException(status_code=500, detail="reset failed")
                self.steps_since_reset = 0
                self.resets += 1
                return {"status": "reset successful"}

        @app.post("/act")
        async def act(request: Request):
            payload = json_numpy.loads(await request.body())
            self.requests.append(Received(payload, tuple(request.client)))
            if "image" not in payload or "instruction" not in payload:
                raise HTTPException(status_code=400,
                                    detail="Missing required fields: image and instruction")
            if self.mode == "http500":
                raise HTTPException(status_code=500, detail="Error processing request.")
            if self.mode == "slow":
                await asyncio.sleep(self.delay_s)
            action = self.action(payload)
            if self.chunk_size > 1:
                action = np.stack([action + 10.0 * i for i in range(self.chunk_size)])
            return json_numpy_response(action if self.reply_form == "bare"
                                       else {"action": action})

        return app

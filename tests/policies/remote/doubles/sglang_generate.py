"""Test double of SGLang's HTTP server serving OpenVLA (`sglang.srt.entrypoints.http_server`):
`GET /health`, `GET /get_model_info` (`{"model_path", "is_generation"}`) and `POST
/generate`, which checks the request has the shape the SGLang VLA doc sends (text,
`data:image/png;base64,` image, sampling_params), decodes the PNG with Pillow, and answers
`{"text", "output_ids", "meta_info"}` with the token ids the test gave it. Errors are
SGLang's `{"error": {"message": ...}}` with HTTP 400. No model runs: no GPU or 7B weights
here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from PIL import Image

MODES = ("ok", "http400", "missing_ids", "slow")
_PNG_URL = "data:image/png;base64,"


@dataclass
class Generated:
    """One /generate request as the server read it."""

    payload: dict
    image: np.ndarray
    """The decoded PNG, HxWx3 uint8."""


@dataclass
class SglangDouble:
    """The server's state: `output_ids` is what /generate answers."""

    output_ids: list[int]
    model_path: str = "openvla/openvla-7b"
    mode: str = "ok"
    delay_s: float = 1.0
    requests: list[Generated] = field(default_factory=list)

    def set_mode(self, mode: str) -> None:
        """Answer the next requests as `mode`."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not in {MODES}")
        self.mode = mode

    def app(self) -> FastAPI:
        """The ASGI app with SGLang's route names."""
        app = FastAPI()

        @app.get("/health")
        async def health():
            return Response(status_code=200)

        @app.get("/get_model_info")
        async def get_model_info():
            return {"model_path": self.model_path, "is_generation": True}

        @app.post("/generate")
        async def generate(request: Request):
            payload = json.loads(await request.body())
            image_data = payload.get("image_data", "")
            if (not isinstance(payload.get("text"), str) or not image_data.startswith(_PNG_URL)
                    or not isinstance(payload.get("sampling_params"), dict)):
                return JSONResponse({"error": {"message": f"bad request: {sorted(payload)}"}},
                                    status_code=400)
            with Image.open(io.BytesIO(base64.b64decode(image_data[len(_PNG_URL):]))) as png:
                if png.format != "PNG" or png.mode != "RGB":
                    return JSONResponse({"error": {"message": f"not an RGB PNG: {png.format} "
                                                              f"{png.mode}"}}, status_code=400)
                image = np.array(png)
            self.requests.append(Generated(payload, image))
            if self.mode == "http400":
                return JSONResponse({"error": {"message": "The input is too long."}},
                                    status_code=400)
            if self.mode == "slow":
                await asyncio.sleep(self.delay_s)
            ids = list(self.output_ids)
            body = {"text": "", "meta_info": {"prompt_tokens": 280, "completion_tokens": len(ids),
                                              "finish_reason": {"type": "length",
                                                                "length": len(ids)}}}
            if self.mode != "missing_ids":
                body["output_ids"] = ids
            return body

        return app

"""An `Adapter` for SGLang's `POST /generate` serving OpenVLA (`python -m
sglang.launch_server --model-path openvla/openvla-7b --trust-remote-code`), built as the
SGLang VLA doc sends it (our copy: shared/reference/sglang-openvla-serving.md):

    {"text": <prompt>, "image_data": "data:image/png;base64,<PNG>",
     "sampling_params": {"max_new_tokens": <action_dim>, "temperature": 0}}

The reply is SGLang's `{"text", "output_ids", "meta_info"}`; the last `action_dim` ids are
OpenVLA action tokens, decoded and un-normalized here exactly as OpenVLA's
`predict_action` does (`policies.remote.action_tokens`), not with the doc's simplified
formula, which mirrors every axis.

The prompt is sent as `ModelInput.prompt` gives it: the convention layer applies OpenVLA's
template (`OPENVLA_PROMPT_TEMPLATE`, `openvla_prompt`, re-exported here). One known
difference from `predict_action` remains on the server side: HF OpenVLA appends token 29871
(the empty SentencePiece piece) after "Out:" before generating; SGLang tokenizes the text
as given.

The PNG is written by the stdlib encoder of `policies.remote.png` (zlib level 6, 8-bit RGB,
no filtering), so the adapter needs no imaging library.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from policies.remote.action_tokens import (
    N_BINS,
    OPENVLA_VOCAB_SIZE,
    ActionDetokenizer,
    ActionTokenError,
)
from policies.remote.base import (
    ModelInput,
    RemoteError,
    RemoteSpec,
    RemoteUnavailable,
    SpecMismatch,
)
from policies.remote.conventions import OPENVLA_PROMPT_TEMPLATE, openvla_prompt
from policies.remote.openvla_http import (
    HttpJsonClient,
    check_actions,
    http_error,
    resolve_unnorm_key,
    select_image,
)
from policies.remote.png import png_bytes

__all__ = ["OPENVLA_PROMPT_TEMPLATE", "SglangAdapter", "openvla_prompt", "png_bytes",
           "png_data_url"]

def png_data_url(image: np.ndarray) -> str:
    """`image` as the `data:image/png;base64,...` URL SGLang's `image_data` takes."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


class SglangAdapter:
    """Client of one SGLang server hosting OpenVLA. Not thread-safe (one per session)."""

    def __init__(self, url: str, *, dataset_statistics: str | Path | None,
                 unnorm_key: str | None, timeout_s: float = 10.0, model_id: str | None = None,
                 action_dim: int = 7, image_key: str | None = None,
                 check_model_path: bool = True, vocab_size: int = OPENVLA_VOCAB_SIZE,
                 n_bins: int = N_BINS) -> None:
        """Args:
            url: the server's base URL, e.g. `http://127.0.0.1:30000`.
            dataset_statistics, unnorm_key: the `dataset_statistics.json` and the dataset
                whose q01/q99 un-normalize the actions (unnorm_key None: the file's only
                dataset).
            timeout_s: per-request limit; longer and the call raises `RemoteUnavailable`.
            model_id: the model the config expects; `connect` compares it with the
                server's `model_path` when `check_model_path`. None: no check, and the
                spec reports the server's `model_path`.
            action_dim: tokens generated per request; must match the statistics.
            image_key: which of `ModelInput.images` to send (default: the only one).
            vocab_size, n_bins: OpenVLA's de-tokenization constants.

        Raises:
            ValueError: no `dataset_statistics` path.
            ActionTokenError: the statistics cannot be read or lack `unnorm_key`, or their
                action dimension is not `action_dim`.
        """
        if dataset_statistics is None:
            raise ValueError("sglang returns action tokens, which are un-normalized with "
                             "dataset statistics: set policy.dataset_statistics to a "
                             "dataset_statistics.json (and policy.unnorm_key)")
        self._detokenize = ActionDetokenizer.from_file(dataset_statistics, unnorm_key,
                                                       vocab_size=vocab_size, n_bins=n_bins)
        if self._detokenize.action_dim != action_dim:
            raise ActionTokenError(f"{dataset_statistics} gives {self.unnorm_key!r} "
                                   f"{self._detokenize.action_dim} action axes, config says "
                                   f"action_dim={action_dim}")
        self._http = HttpJsonClient(url, timeout_s)
        self._model_id, self._action_dim = model_id, action_dim
        self._image_key, self._check_model_path = image_key, check_model_path

    @property
    def unnorm_key(self) -> str:
        """The dataset whose statistics un-normalize the actions."""
        return self._detokenize.statistics.unnorm_key

    def connect(self, timeout_s: float) -> RemoteSpec:
        """Wait until `GET /get_model_info` answers and compare its `model_path` with
        `model_id` by last path component (`/models/openvla-7b` matches
        `openvla/openvla-7b`).

        Raises:
            RemoteUnavailable: no answer within `timeout_s`, or an error status.
            SpecMismatch: the server serves another model; names both.
        """
        response = self._http.wait_until_answers("/get_model_info", timeout_s)
        if not response.is_success:
            raise RemoteUnavailable(f"{self._http.base_url}/get_model_info answered HTTP "
                                    f"{response.status_code}: {response.text[:300]!r}")
        try:
            info = response.json()
        except json.JSONDecodeError:
            info = None
        model_path = info.get("model_path") if isinstance(info, dict) else None
        if (self._check_model_path and self._model_id is not None
                and isinstance(model_path, str)
                and _basename(model_path) != _basename(self._model_id)):
            raise SpecMismatch(f"{self._http.base_url} serves model_path {model_path!r}, "
                               f"config expects model_id {self._model_id!r}")
        model_id = self._model_id or (model_path if isinstance(model_path, str) else "sglang")
        return RemoteSpec(action_dim=self._action_dim, chunk_size=1, model_id=model_id,
                          details={"url": self._http.base_url, "model_path": model_path,
                                   "unnorm_key": self.unnorm_key})

    def reset(self, *, prompt: str) -> None:
        """Nothing to reset: `/generate` keeps no episode state."""

    def act(self, model_input: ModelInput) -> np.ndarray:
        """Generate `action_dim` tokens greedily and return them decoded as (1, action_dim)
        float32.

        Raises:
            RemoteError: an error status, no `output_ids`, fewer ids than `action_dim`, or
                ids outside OpenVLA's action tokens.
            RemoteUnavailable: no answer within timeout_s (the next call reconnects).
            ValueError: the model input does not fit (`select_image`, or an
                `extra["unnorm_key"]` other than the configured one).
        """
        resolve_unnorm_key(self.unnorm_key, model_input)
        payload = {
            "text": model_input.prompt,
            "image_data": png_data_url(select_image(model_input.images, self._image_key)),
            "sampling_params": {"max_new_tokens": self._action_dim, "temperature": 0},
        }
        what = f"POST {self._http.base_url}/generate"
        response = self._http.request("POST", "/generate", body=json.dumps(payload))
        if not response.is_success:
            raise http_error(response, what)
        token_ids = self._action_token_ids(response.text, what)
        try:
            action = self._detokenize(token_ids)
        except ActionTokenError as exc:
            raise RemoteError(f"{what}: {exc}") from exc
        return check_actions(action, chunk_size=1, action_dim=self._action_dim, what=what)

    def _action_token_ids(self, text: str, what: str) -> list[int]:
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RemoteError(f"{what}: the reply is not JSON: {text[:300]!r}") from exc
        ids = body.get("output_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise RemoteError(f"{what}: the reply has no list of int output_ids: "
                              f"{text[:300]!r}")
        if len(ids) < self._action_dim:
            meta = body.get("meta_info")
            finish = meta.get("finish_reason") if isinstance(meta, dict) else None
            raise RemoteError(f"{what}: {len(ids)} output_ids, fewer than action_dim="
                              f"{self._action_dim} (finish_reason {finish!r}): {ids}")
        return ids[-self._action_dim:]

    def close(self) -> None:
        """Drop the keep-alive connection; idempotent (a later call reconnects)."""
        self._http.close()


def _basename(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]

"""An `Adapter` for the HTTP `POST /act` policy servers people run for OpenVLA-style models:
OpenVLA's own `vla-scripts/deploy.py` (flavour `deploy`) and AutoEval's policy servers
(flavour `autoeval`, zhouzypaul/auto_eval `auto_eval/policy_server/template.py` and the
client `auto_eval/robot/policy_clients.py` `OpenWebClient`).

Both speak json-numpy (`policies.remote.json_numpy`) over one keep-alive connection:

- request `{"image": <HxWx3 uint8>, "instruction": str, "unnorm_key"?: str}`; AutoEval adds
  `"proprio"?: <array>` (the template's `payload.get("proprio")`).
- reply: the bare action array. Both servers' docstrings promise `{"action": ...}`, but both
  return `JSONResponse(action)`, and AutoEval's client rejects anything but an array or a
  list; we accept the bare array, a JSON list, or `{"action": ...}`.
- errors: deploy.py catches everything and answers HTTP 200 with the JSON string `"error"`;
  AutoEval raises FastAPI `HTTPException` 400/500 (`{"detail": ...}`). Both are
  `RemoteError`, never an action.
- handshake: none. deploy.py loads the model before uvicorn listens, so any HTTP answer
  means it is ready; AutoEval servers have `GET /health` (`{"status": "healthy"}`). The spec
  comes from config (action_dim 7, chunk_size 1 unless configured).
- reset: AutoEval's client `POST /reset`s at each episode start and ignores 404 (servers
  without the route); deploy.py has no reset.

Both servers apply OpenVLA's prompt template themselves (deploy.py `get_openvla_prompt`), so
a prompt that already carries it is sent as its bare instruction (`openvla_instruction`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from enum import Enum

import httpx
import numpy as np

from policies.remote import json_numpy
from policies.remote.base import ModelInput, RemoteError, RemoteSpec, RemoteUnavailable
from policies.remote.conventions import OPENVLA_PROMPT_TEMPLATE

DEFAULT_MODEL_ID = "openvla/openvla-7b"
"""deploy.py's default `openvla_path`, reported when the config names no model."""

_PREFIX, _SUFFIX = OPENVLA_PROMPT_TEMPLATE.split("{instruction}")


def openvla_instruction(prompt: str) -> str:
    """The instruction inside an OpenVLA-templated prompt; any other prompt unchanged."""
    if prompt.startswith(_PREFIX) and prompt.endswith(_SUFFIX) and len(prompt) > len(
            _PREFIX) + len(_SUFFIX):
        return prompt[len(_PREFIX):-len(_SUFFIX)]
    return prompt


class HttpJsonClient:
    """A keep-alive HTTP connection to one server that turns every failure to get an answer
    into `RemoteUnavailable` and starts a fresh connection on the next call. Shared by the
    HTTP adapters; not thread-safe."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._client: httpx.Client | None = None

    def request(self, method: str, path: str, *, body: str | None = None,
                timeout_s: float | None = None) -> httpx.Response:
        """Send one request and read the whole reply; blocks at most about `timeout_s`
        (default: the client's) per phase (connect, write, read).

        Raises:
            RemoteUnavailable: refused, timed out, or the connection dropped.
            RemoteError: an answer httpx cannot read.
        """
        if self._client is None:
            # trust_env=False: an HTTP(S)_PROXY in the environment must not reroute robot
            # traffic meant for an explicit server address.
            self._client = httpx.Client(base_url=self.base_url, trust_env=False)
        timeout = self._timeout_s if timeout_s is None else timeout_s
        headers = {"content-type": "application/json"} if body is not None else None
        try:
            return self._client.request(method, path, content=body, headers=headers,
                                        timeout=timeout)
        except httpx.TimeoutException as exc:
            self.close()
            raise RemoteUnavailable(f"{method} {self.base_url}{path}: no reply within "
                                    f"{timeout} s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            self.close()
            raise RemoteUnavailable(f"{method} {self.base_url}{path}: {type(exc).__name__}: "
                                    f"{exc}") from exc
        except httpx.HTTPError as exc:  # an answer httpx cannot read (e.g. bad encoding)
            self.close()
            raise RemoteError(f"{method} {self.base_url}{path}: {type(exc).__name__}: "
                              f"{exc}") from exc

    def wait_until_answers(self, path: str, timeout_s: float) -> httpx.Response:
        """GET `path` until the server answers at all (any status), backing off from
        50 ms to 1 s.

        Raises:
            RemoteUnavailable: no answer within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        delay_s = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self.request("GET", path, timeout_s=max(min(remaining, self._timeout_s),
                                                               0.01))
            except RemoteUnavailable as exc:
                if time.monotonic() + delay_s >= deadline:
                    raise RemoteUnavailable(f"{self.base_url} did not answer within "
                                            f"{timeout_s} s: {exc}") from exc
            time.sleep(delay_s)
            delay_s = min(2 * delay_s, 1.0)

    def close(self) -> None:
        """Drop the connection; the next request opens a new one. Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None


def http_error(response: httpx.Response, what: str) -> RemoteError:
    """A `RemoteError` naming the HTTP status of `what` and the start of the reply body."""
    return RemoteError(f"{what} answered HTTP {response.status_code}: "
                       f"{response.text[:300]!r}")


def select_image(images: Mapping[str, np.ndarray], image_key: str | None) -> np.ndarray:
    """The one image these single-image servers take: `images[image_key]`, or the only image.

    Raises:
        ValueError: no such image, several and no `image_key`, or not HxWx3 uint8.
    """
    if image_key is None:
        if len(images) != 1:
            raise ValueError(f"the server takes one image; got {sorted(images)}: set image_key")
        (image,) = images.values()
    elif image_key in images:
        image = images[image_key]
    else:
        raise ValueError(f"image_key {image_key!r} not in the model input's images "
                         f"{sorted(images)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    return image


def resolve_unnorm_key(configured: str | None, model_input: ModelInput) -> str | None:
    """The configured `unnorm_key`, or `model_input.extra["unnorm_key"]` when none is
    configured.

    Raises:
        ValueError: both are set and differ (actions would be scaled for another robot).
    """
    extra = model_input.extra.get("unnorm_key")
    if extra is None:
        return configured
    if configured is not None and extra != configured:
        raise ValueError(f"model input asks for unnorm_key {extra!r}, the adapter is "
                         f"configured with {configured!r}")
    return str(extra)


def check_actions(array: np.ndarray, *, chunk_size: int, action_dim: int,
                  what: str) -> np.ndarray:
    """`array` as (chunk_size, action_dim) float32; a (action_dim,) array counts as one
    action when chunk_size is 1.

    Raises:
        RemoteError: not numeric, the wrong shape, or non-finite values (after the cast).
    """
    if array.dtype.kind not in "iuf":
        raise RemoteError(f"{what}: the action has dtype {array.dtype}, not a number type")
    if chunk_size == 1 and array.shape == (action_dim,):
        array = array.reshape(1, action_dim)
    if array.shape != (chunk_size, action_dim):
        also = f" or ({action_dim},)" if chunk_size == 1 else ""
        raise RemoteError(f"{what}: the action has shape {array.shape}; config says "
                          f"({chunk_size}, {action_dim}){also}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf
        actions = array.astype(np.float32)
    bad = ~np.isfinite(actions)
    if bad.any():
        raise RemoteError(f"{what}: non-finite action values at (step, axis) "
                          f"{np.argwhere(bad).tolist()}: {array.tolist()}")
    return actions


class Flavour(str, Enum):
    """Which `/act` server convention the adapter speaks; `"openvla"` (the harness's
    protocol name) means `deploy`."""

    deploy = "deploy"
    """OpenVLA `vla-scripts/deploy.py`: no health route, no reset, HTTP 200 "error"."""
    autoeval = "autoeval"
    """AutoEval policy servers: `/health`, `/reset`, optional `proprio`, HTTP 4xx/5xx."""

    @classmethod
    def _missing_(cls, value: object) -> Flavour | None:
        return cls.deploy if value == "openvla" else None


class OpenvlaHttpAdapter:
    """Client of one `/act` server. Not thread-safe (one per session)."""

    def __init__(self, url: str, flavour: Flavour | str = Flavour.deploy, timeout_s: float = 10.0,
                 model_id: str | None = None, unnorm_key: str | None = None,
                 action_dim: int = 7, *, chunk_size: int = 1, image_key: str | None = None,
                 health_path: str = "/health", reset_path: str = "/reset") -> None:
        """Args:
            url: the server's base URL, e.g. `http://127.0.0.1:8000`.
            flavour: `deploy` (alias `openvla`) or `autoeval` (see `Flavour`).
            timeout_s: per-request limit; longer and the call raises `RemoteUnavailable`.
            model_id: reported in the spec (the server does not declare it); None:
                deploy.py's default `openvla/openvla-7b`.
            unnorm_key: sent with every request when set (deploy.py's optional field).
            action_dim, chunk_size: the reply's shape, (chunk_size, action_dim).
            image_key: which of `ModelInput.images` to send (default: the only one).
            health_path, reset_path: AutoEval's routes (its template's names by default).
        """
        if action_dim < 1 or chunk_size < 1:
            raise ValueError(f"action_dim and chunk_size must be >= 1, got {action_dim}, "
                             f"{chunk_size}")
        self._flavour = Flavour(flavour)
        self._http = HttpJsonClient(url, timeout_s)
        self._model_id, self._unnorm_key = model_id or DEFAULT_MODEL_ID, unnorm_key
        self._action_dim, self._chunk_size = action_dim, chunk_size
        self._image_key = image_key
        self._health_path, self._reset_path = health_path, reset_path

    def connect(self, timeout_s: float) -> RemoteSpec:
        """Wait until the server answers HTTP (deploy: on any route; autoeval: `GET
        /health` 2xx, or 404 for a server without one) and return the configured spec.

        Raises:
            RemoteUnavailable: no answer within `timeout_s`, or AutoEval's health route
                answered an error status.
        """
        path = "/" if self._flavour is Flavour.deploy else self._health_path
        response = self._http.wait_until_answers(path, timeout_s)
        if self._flavour is Flavour.autoeval and not (
                response.is_success or response.status_code == 404):
            raise RemoteUnavailable(f"{self._http.base_url}{path} answered HTTP "
                                    f"{response.status_code}: {response.text[:300]!r}")
        return RemoteSpec(action_dim=self._action_dim, chunk_size=self._chunk_size,
                          model_id=self._model_id,
                          details={"flavour": self._flavour.value, "url": self._http.base_url,
                                   "unnorm_key": self._unnorm_key,
                                   "probe": f"GET {path} -> HTTP {response.status_code}"})

    def reset(self, *, prompt: str) -> None:
        """AutoEval: `POST /reset` (no body; 404 means the server keeps no state, as
        AutoEval's client treats it). deploy: nothing to reset.

        Raises:
            RemoteError: the reset route answered another error status.
            RemoteUnavailable: no answer.
        """
        if self._flavour is Flavour.deploy:
            return
        response = self._http.request("POST", self._reset_path)
        if not (response.is_success or response.status_code == 404):
            raise http_error(response, f"POST {self._http.base_url}{self._reset_path}")

    def act(self, model_input: ModelInput) -> np.ndarray:
        """POST the image, instruction (and AutoEval's proprio, when the input has a state)
        and return the reply as (chunk_size, action_dim) float32.

        Raises:
            RemoteError: an error status, deploy.py's "error", or a reply that is not a
                finite action of the configured shape.
            RemoteUnavailable: no answer within timeout_s (the next call reconnects).
            ValueError: the model input does not fit (see `select_image`,
                `resolve_unnorm_key`).
        """
        payload: dict[str, object] = {
            "image": json_numpy.encode(select_image(model_input.images, self._image_key)),
            "instruction": openvla_instruction(model_input.prompt)}
        unnorm_key = resolve_unnorm_key(self._unnorm_key, model_input)
        if unnorm_key is not None:
            payload["unnorm_key"] = unnorm_key
        if self._flavour is Flavour.autoeval and model_input.state is not None:
            payload["proprio"] = json_numpy.encode(np.asarray(model_input.state))
        what = f"POST {self._http.base_url}/act"
        response = self._http.request("POST", "/act", body=json.dumps(payload))
        if not response.is_success:
            raise http_error(response, what)
        return check_actions(self._action_array(response, what), chunk_size=self._chunk_size,
                             action_dim=self._action_dim, what=what)

    @staticmethod
    def _action_array(response: httpx.Response, what: str) -> np.ndarray:
        try:
            body = json_numpy.loads(response.content)
        except json.JSONDecodeError as exc:
            raise RemoteError(f"{what}: the reply is not JSON: {response.text[:300]!r}") from exc
        except json_numpy.JsonNumpyError as exc:
            raise RemoteError(f"{what}: the reply's array is malformed: {exc}") from exc
        if isinstance(body, str) and body == "error":
            raise RemoteError(f"{what} answered \"error\" (deploy.py's HTTP 200 error reply: "
                              "the server failed the request; its log has the traceback)")
        if isinstance(body, dict) and "action" in body:
            body = body["action"]
        if isinstance(body, np.ndarray):
            return body
        if isinstance(body, list):
            try:
                array = np.asarray(body)
            except ValueError:  # ragged nested lists
                array = np.asarray(None)
            if array.dtype.kind in "iuf":
                return array
        raise RemoteError(f"{what}: the reply is not an action array: {response.text[:300]!r}")

    def close(self) -> None:
        """Drop the keep-alive connection; idempotent (a later call reconnects)."""
        self._http.close()

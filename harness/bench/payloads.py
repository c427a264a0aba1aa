"""The benchmark's fixed messages: the observation every round trip sends and the action
chunk every peer answers with. One module, so the transport rows, the real peers' rows and
the peer processes all send and answer the same bytes."""

from __future__ import annotations

import time

import numpy as np

from harness import protocol


def realistic_observation(image_size: int = 224, seed: int = 0) -> protocol.Observation:
    """Two camera images with smooth structure and sensor noise (so JPEG sizes are typical),
    a 9-float state and an instruction: what a VLA on a real arm receives."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    images = {}
    for camera, phase in (("agentview", 0.0), ("wrist", 1.3)):
        channels = [np.sin(6 * xx + phase + c) * np.cos(4 * yy - c) for c in range(3)]
        base = (np.stack(channels, axis=-1) * 90 + 128).astype(np.float32)
        noisy = base + rng.normal(0, 6, base.shape)
        images[camera] = np.clip(noisy, 0, 255).astype(np.uint8)
    state = {"robot_state": rng.normal(size=9).astype(np.float32)}
    return protocol.Observation(state=state, images=images,
                                instruction="put the cream cheese in the basket")


def observation_payloads(image_size: int, jpeg_quality: int) -> dict[str, bytes]:
    """The observation message encoded raw ("raw", ~301 KB at 224) and with JPEG images
    ("jpeg", ~26 KB)."""
    message = protocol.Message(realistic_observation(image_size), seq=1, episode=1, epoch=1,
                               client_ns=time.monotonic_ns())
    return {"raw": protocol.encode(message),
            "jpeg": protocol.encode(message, jpeg_quality=jpeg_quality)}


def action_reply() -> bytes:
    """The benchmark's fixed answer: an 8-step, 7-D float32 action chunk."""
    chunk = protocol.ActionChunk(actions=np.zeros((8, 7), np.float32), obs_seq=0,
                                 queue_wait_ns=0, infer_ns=0, model_id="bench")
    return protocol.encode(protocol.Message(chunk, flags=protocol.Flags.RESPONSE))

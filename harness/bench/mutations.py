"""Hostile messages for a policy server, made from real encoded ones: the named edge values
(`edge_cases`, each with the answer the server owes it) and a seeded mutator of random ones
(`Mutator`).

The hostile-message tests (`tests/server/test_hostile_messages.py`) send every edge case over
every transport; the long fuzz (`python -m harness.bench.fuzz`) sends 10^5 mutations per
transport. One catalogue for both, so a value found by the fuzz becomes a named case once.
A message is bytes: a valid one is encoded, then its header fields set by name and its
msgpack body re-packed with fields replaced (`rewrite`), which the encoder would refuse to do.
No pickle, no eval.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from typing import Any

import msgpack
import numpy as np

from harness import protocol
from harness.protocol.arrays import pack_array
from harness.protocol.checks import MAX_PREFIX_S

STREAM, REQUEST = "stream", "request"
"""The path a hostile message is sent on."""
CHUNK, REJECT = "chunk", "reject"
"""`Hostile.expect` besides an error code: an action chunk, a session reject."""
HEADER_FIELDS = ("magic", "version", "msg_type", "flags", "seq", "episode", "epoch",
                 "client_ns", "body_len")
"""`protocol.HEADER`'s fields, in order."""
HEADER_BITS = {"version": 8, "msg_type": 8, "flags": 16, "seq": 64, "episode": 32, "epoch": 32,
               "client_ns": 64, "body_len": 32}
ODD_VALUES = (None, True, -1, 2**63 - 1, 2**63, 2**64 - 1, -2**63, 1.5, float("nan"), "",
              "5", b"", b"\xff" * 9, [], [-1], [2**63, 2**63], {}, {"x": {"y": {"z": {}}}},
              {"dtype": "<f4", "shape": [2**40], "data": b""}, msgpack.ExtType(3, b"x"))
"""Values put where the schema wants another: type confusion, limits, nested maps."""
_EPOCH, _EPOCH_OFFSET = struct.Struct("<I"), 18
"""The header's epoch field and where it starts (after magic, version, type, flags, seq,
episode)."""
_NON_UTF8_MARK = "\u00e9" * 4
"""A str whose 8 UTF-8 bytes are swapped for 8 that are not UTF-8 after packing."""


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One crafted message, the path it goes on, and what the server must answer: CHUNK,
    REJECT, or the code of the ERROR it sends back."""

    name: str
    payload: bytes
    path: str
    expect: str


def rewrite(valid: bytes, *, fields: dict[str, Any] | None = None, body: bytes | None = None,
            **header: int | bytes) -> bytes:
    """`valid` (one encoded message) with its body map updated by `fields` and re-packed, or
    its body replaced by raw `body` bytes, then header fields set by name (`seq=2**64 - 1`);
    `body_len` follows the body unless it is given."""
    values = dict(zip(HEADER_FIELDS, protocol.HEADER.unpack_from(valid), strict=True))
    packed = valid[protocol.HEADER.size:]
    if fields is not None:
        packed = msgpack.packb({**msgpack.unpackb(packed, raw=False), **fields},
                               use_bin_type=True)
    if body is not None:
        packed = body
    values["body_len"] = len(packed)
    values.update(header)
    return protocol.HEADER.pack(*values.values()) + packed


def non_utf8(valid: bytes, **fields: Any) -> bytes:
    """`valid` with `fields` set, where every `_NON_UTF8_MARK` str becomes bytes that are
    not UTF-8 in a msgpack str: what no encoder writes, and a decoder must refuse."""
    packed = rewrite(valid, fields=fields)
    mark = _NON_UTF8_MARK.encode()
    return packed.replace(mark, b"\xff\xfe" * (len(mark) // 2))


def sized(valid_observation: bytes, total_bytes: int) -> bytes:
    """`valid_observation` with an instruction padded so the message is `total_bytes` long
    (at least 70 kB: the instruction is then a str32, 5 bytes of msgpack header)."""
    base = rewrite(valid_observation, fields={"instruction": ""})
    pad = total_bytes - len(base) - 4  # "" packs to 1 byte, a str32 header to 5
    if pad < 65_536:
        raise ValueError(f"total_bytes={total_bytes}: at least {len(base) + 65_540} for a str32")
    return rewrite(valid_observation, fields={"instruction": "x" * pad})


def _array(dtype: Any, shape: Any, data: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data": data}


def edge_cases(observation: protocol.Observation, contract: protocol.Contract, *,
               epoch: int) -> list[Hostile]:
    """The edge values of issue 21 around one valid `observation` of a session of `epoch`
    (episode 1) whose client declared `contract`, with what the server must answer each.
    The last case moves the session to episode 2**32 - 1: send it last."""
    obs = protocol.encode(protocol.Message(observation, seq=1, episode=1, epoch=epoch))
    prefix = np.zeros((1, contract.action_dim), np.float32)
    delayed = protocol.encode(protocol.Message(dataclasses.replace(
        observation, tick=5, delay_ticks=1, committed=prefix), seq=1, episode=1, epoch=epoch))
    key = next(iter(observation.state))
    state = {k: pack_array(v, k) for k, v in observation.state.items()}

    def delayed_by(ticks: int, action_dim: int = contract.action_dim,
                   fill: float = 0.0) -> bytes:
        committed = np.full((ticks, action_dim), fill, np.float32)
        return protocol.encode(protocol.Message(dataclasses.replace(
            observation, delay_ticks=ticks, committed=committed), seq=1, episode=1, epoch=epoch))

    def with_array(**array: Any) -> bytes:
        return rewrite(obs, fields={"state": {**state, key: {**state[key], **array}}})

    good = observation.state[key]
    keys_200k = {f"k{i:06d}": i for i in range(200_000)}
    decode, contract_error = "decode", protocol.ERROR_CONTRACT
    stream = [
        ("seq 2**63-1", rewrite(obs, seq=2**63 - 1), CHUNK),
        ("seq 2**63", rewrite(obs, seq=2**63), decode),
        ("seq 2**64-1", rewrite(obs, seq=2**64 - 1), decode),
        ("client_ns 2**64-1", rewrite(obs, client_ns=2**64 - 1), CHUNK),
        ("tick 2**63-1", rewrite(obs, fields={"tick": 2**63 - 1}), CHUNK),
        ("tick 2**63-1 + delay 1", rewrite(delayed, fields={"tick": 2**63 - 1}), decode),
        ("delay -1", rewrite(delayed, fields={"delay_ticks": -1}), decode),
        ("delay 2**63", rewrite(delayed, fields={"delay_ticks": 2**63}), decode),
        ("delay 2**64-1", rewrite(delayed, fields={"delay_ticks": 2**64 - 1}), decode),
        ("delay 10**6, one committed action", rewrite(delayed, fields={"delay_ticks": 10**6}),
         decode),
        ("committed past MAX_PREFIX_S", delayed_by(int(MAX_PREFIX_S * contract.control_hz) + 1),
         contract_error),
        ("committed action_dim + 1", delayed_by(1, contract.action_dim + 1), contract_error),
        ("committed NaN", delayed_by(1, fill=np.nan), contract_error),
        ("tick as str", rewrite(obs, fields={"tick": "5"}), decode),
        ("delay as float", rewrite(delayed, fields={"delay_ticks": 1.0}), decode),
        ("state as list", rewrite(obs, fields={"state": [1, 2]}), decode),
        ("instruction as int", rewrite(obs, fields={"instruction": 7}), decode),
        ("nested maps for an array", rewrite(obs, fields={"state": {key: {"x": {"y": {}}}}}),
         decode),
        ("body a list", rewrite(obs, body=msgpack.packb([1, 2, 3])), decode),
        ("100k-deep nesting", rewrite(obs, body=b"\x91" * 100_000 + b"\xc0"), decode),
        ("array dtype <U8", with_array(dtype="<U8"), decode),
        ("array dtype object", with_array(dtype="|O"), decode),
        ("array dtype as int", with_array(dtype=5), decode),
        ("array bytes short", with_array(data=good.tobytes()[:-1]), decode),
        ("array bytes long", with_array(data=good.tobytes() + b"\0" * good.itemsize), decode),
        ("array shape 2**40", with_array(shape=[2**40]), decode),
        ("array shape -1", with_array(shape=[-1]), decode),
        ("array of 9 dimensions", with_array(shape=[1] * 9, data=b""), decode),
        ("array shape as str", with_array(shape="3"), decode),
        ("jpeg garbage", rewrite(obs, fields={"images": {"cam": {
            "jpeg": b"\xff\xd8garbage", "shape": [8, 8, 3]}}}, flags=protocol.Flags.JPEG),
         decode),
        ("array shape off contract", with_array(**_array(
            "<f4", [good.size + 1], bytes(4 * (good.size + 1)))), contract_error),
        ("array dtype off contract", with_array(**_array(
            "<f8", list(good.shape), bytes(8 * good.size))), contract_error),
        ("array NaN", with_array(data=np.full(good.shape, np.nan, good.dtype).tobytes()),
         contract_error),
        ("state key missing", rewrite(obs, fields={"state": {}}), contract_error),
        ("200k unexpected keys (2.2 MB)", rewrite(obs, fields=keys_200k, seq=3), decode),
        ("non-UTF-8 instruction", non_utf8(obs, instruction=_NON_UTF8_MARK), decode),
        ("non-UTF-8 state key", non_utf8(obs, state={**state, _NON_UTF8_MARK: state[key]}),
         decode),
        ("bad magic", rewrite(obs, magic=b"XX"), decode),
        ("version 255", rewrite(obs, version=255), decode),
        ("msg_type 200", rewrite(obs, msg_type=200), decode),
        ("flags 0xffff", rewrite(obs, flags=0xFFFF), decode),
        ("body_len one over", rewrite(obs, body_len=len(obs) - protocol.HEADER.size + 1),
         decode),
        ("body_len 2**32-1", rewrite(obs, body_len=2**32 - 1), decode),
        ("header cut short", obs[:protocol.HEADER.size - 1], decode),
        ("empty", b"", decode),
        ("epoch of no session", rewrite(obs, epoch=0), protocol.SESSION_UNKNOWN),  # from 1 up
        ("session open on the stream", protocol.encode(protocol.Message(
            protocol.SessionOpen("x", contract), epoch=epoch)), protocol.ERROR_PROTOCOL),
        ("episode 2**32-1", rewrite(obs, episode=2**32 - 1), CHUNK),
    ]
    opening = protocol.encode(protocol.Message(protocol.SessionOpen("edge", contract)))
    packed_contract = msgpack.unpackb(opening[protocol.HEADER.size:], raw=False)["contract"]
    status = protocol.encode(protocol.Message(protocol.Status(), epoch=epoch))
    request = [
        ("open: chunk_size as str", rewrite(opening, fields={
            "contract": {**packed_contract, "chunk_size": "8"}}), decode),
        ("open: nested maps for the state", rewrite(opening, fields={
            "contract": {**packed_contract, "state": {"x": {"y": {"z": {}}}}}}), decode),
        ("open: 1,025 action names", rewrite(opening, fields={
            "contract": {**packed_contract, "action_names": ["a"] * 1025}}), decode),
        ("open: client id of 100k chars", rewrite(opening, fields={"client_id": "c" * 100_000}),
         REJECT),
        ("open: non-UTF-8 client id", non_utf8(opening, client_id=_NON_UTF8_MARK), decode),
        ("open: version 1", rewrite(opening, version=1), REJECT),
        ("status: seq 2**64-1", rewrite(status, seq=2**64 - 1), decode),
        ("status: fields of nested maps", rewrite(status, fields={"fields": {"a": {"b": {}}}}),
         decode),
        ("observation as a request", obs, protocol.ERROR_PROTOCOL),
        ("request: 100k-deep nesting", rewrite(status, body=b"\x91" * 100_000 + b"\xc0"),
         decode),
    ]
    return ([Hostile(name, payload, REQUEST, expect) for name, payload, expect in request]
            + [Hostile(name, payload, STREAM, expect) for name, payload, expect in stream])


class Mutator:
    """Random hostile messages from valid ones, reproducible from `seed`.

    Each call picks a valid message of `stream` or `request` (encoded by the caller: the
    epoch of its session is theirs to set) or a named edge case, and breaks it one way:
    a header field set to a limit of its width, a body value swapped for an `ODD_VALUES`
    one at any depth, an array's dtype, shape or bytes spoiled, bytes overwritten, cut or
    appended, or (rarely, they are expensive) the body padded to a size around
    `max_bytes`."""

    def __init__(self, *, stream: list[bytes], request: list[bytes], edges: list[Hostile],
                 max_bytes: int, seed: int = 0, big_every: int = 500) -> None:
        self._sources = {STREAM: stream, REQUEST: request}
        self._edges = [edge for edge in edges if len(edge.payload) < 100_000]
        self._big_edges = [edge for edge in edges if len(edge.payload) >= 100_000]
        self._max_bytes = max_bytes
        self._big_every = big_every
        self._rng = random.Random(seed)

    def rebase_epoch(self, old: int, new: int) -> None:
        """Move the stream's sources and the edge cases from the session of epoch `old` to
        that of `new` (the caller re-opened it): their header's epoch is rewritten where it
        is `old`, nothing else (a body length that lies on purpose still lies)."""
        def moved(payload: bytes) -> bytes:
            if len(payload) < protocol.HEADER.size or _EPOCH.unpack_from(
                    payload, _EPOCH_OFFSET)[0] != old:
                return payload
            return payload[:_EPOCH_OFFSET] + _EPOCH.pack(new) + payload[_EPOCH_OFFSET + 4:]

        self._sources[STREAM] = [moved(p) for p in self._sources[STREAM]]
        for edges in (self._edges, self._big_edges):
            edges[:] = [dataclasses.replace(e, payload=moved(e.payload)) for e in edges]

    def __call__(self) -> tuple[str, bytes]:
        """(path, payload) of the next hostile message."""
        rng = self._rng
        if rng.randrange(self._big_every) == 0:
            return self._big()
        if rng.randrange(10) == 0:
            edge = rng.choice(self._edges)
            return edge.path, edge.payload
        path = STREAM if rng.random() < 0.7 else REQUEST
        valid = rng.choice(self._sources[path])
        how = rng.choice((self._header, self._odd_value, self._odd_value, self._array,
                          self._bytes))
        return path, how(valid)

    def _big(self) -> tuple[str, bytes]:
        rng = self._rng
        if self._big_edges and rng.random() < 0.3:
            edge = rng.choice(self._big_edges)
            return edge.path, edge.payload
        size = rng.choice((self._max_bytes, self._max_bytes + 1,
                           rng.randrange(100_000, self._max_bytes + 4096)))
        return rng.choice((STREAM, REQUEST)), sized(self._sources[STREAM][0], size)

    def _header(self, valid: bytes) -> bytes:
        name = self._rng.choice(list(HEADER_BITS))
        bits = HEADER_BITS[name]
        value = self._rng.choice((0, 1, 2**(bits - 1) - 1, 2**(bits - 1), 2**bits - 1,
                                  self._rng.randrange(2**bits)))
        return rewrite(valid, **{name: value})

    def _odd_value(self, valid: bytes) -> bytes:
        tree = msgpack.unpackb(valid[protocol.HEADER.size:], raw=False)
        slots = list(_slots(tree))
        if not slots:
            return rewrite(valid, body=msgpack.packb(self._rng.choice(ODD_VALUES)))
        parent, key = self._rng.choice(slots)
        action = self._rng.randrange(3)
        if action == 0:
            parent[key] = self._rng.choice(ODD_VALUES)
        elif action == 1:
            del parent[key]
        elif isinstance(parent, dict):
            parent[self._rng.choice(("x", "data", "jpeg", "shape"))] = self._rng.choice(
                ODD_VALUES)
        else:
            parent.append(self._rng.choice(ODD_VALUES))
        return rewrite(valid, body=msgpack.packb(tree, use_bin_type=True))

    def _array(self, valid: bytes) -> bytes:
        tree = msgpack.unpackb(valid[protocol.HEADER.size:], raw=False)
        arrays = [node for node, _ in _slots(tree)
                  if isinstance(node, dict) and {"dtype", "shape", "data"} <= node.keys()]
        if not arrays:
            return self._odd_value(valid)
        array = self._rng.choice(arrays)
        field, value = self._rng.choice((
            ("dtype", "<U8"), ("dtype", "|O"), ("dtype", ">f4"), ("dtype", "<f8"),
            ("shape", [2**40]), ("shape", [-1]), ("shape", [1] * 9), ("shape", []),
            ("shape", [0]), ("data", b""), ("data", bytes(array["data"]) + b"\0"),
            ("data", bytes(array["data"])[:-1]),
            ("data", np.full(len(array["data"]) // 4, np.nan, np.float32).tobytes())))
        array[field] = value
        return rewrite(valid, body=msgpack.packb(tree, use_bin_type=True))

    def _bytes(self, valid: bytes) -> bytes:
        rng, data = self._rng, bytearray(valid)
        choice = rng.randrange(4)
        if choice == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 1:
            del data[rng.randrange(len(data)):]
        elif choice == 2:
            data += rng.randbytes(rng.randint(1, 64))
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 300)))
        return bytes(data)


def _slots(tree: Any):
    """(container, key) of every value inside `tree`, depth first."""
    if isinstance(tree, dict):
        keys: Any = list(tree)
    elif isinstance(tree, list):
        keys = range(len(tree))
    else:
        return
    for key in keys:
        yield tree, key
        yield from _slots(tree[key])

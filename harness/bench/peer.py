"""The far end of a benchmark round trip, run as its own process.

A round trip measured between two threads of one process shares a GIL and a cache with its
peer; a real policy server is another process (usually another host). So every benchmark
peer (each transport's server, and the raw TCP and websocket floors) runs here, answers every
observation with the same 8x7 action chunk, and stops when its stdin closes. Configs arrive as
JSON on the command line: no pickle anywhere.

    python -m harness.bench.peer <kind> <config-json>
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import threading
from collections.abc import Callable

import numpy as np

from harness import protocol
from transports import make_server
from transports.config import (
    GrpcTransportConfig,
    LocalTransportConfig,
    TransportConfig,
    ZenohTransportConfig,
    ZmqTransportConfig,
)

CONFIG_CLASSES: dict[str, type[TransportConfig]] = {
    "local": LocalTransportConfig,
    "zenoh": ZenohTransportConfig,
    "grpc": GrpcTransportConfig,
    "zmq": ZmqTransportConfig,
}
LENGTH_PREFIX = struct.Struct("<I")


def action_reply() -> bytes:
    """The benchmark's fixed answer: an 8-step, 7-D float32 action chunk."""
    chunk = protocol.ActionChunk(actions=np.zeros((8, 7), np.float32), obs_seq=0, queue_wait_ns=0,
                             infer_ns=0, model_id="bench")
    return protocol.encode(protocol.Message(chunk, flags=protocol.Flags.RESPONSE))


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    """Read exactly n bytes, or return None if the peer closed the connection first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def serve_tcp(port: int, reply: bytes, stop: threading.Event) -> None:
    """Length-prefixed request/reply over one TCP connection: the floor nothing can beat."""
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    print("READY", flush=True)
    framed_reply = LENGTH_PREFIX.pack(len(reply)) + reply
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while (header := recv_exact(conn, LENGTH_PREFIX.size)) is not None:
                if recv_exact(conn, LENGTH_PREFIX.unpack(header)[0]) is None:
                    break
                conn.sendall(framed_reply)
    listener.close()


def serve_websocket(port: int, reply: bytes, stop: threading.Event) -> None:
    """msgpack frames over a websocket, served by asyncio as openpi and vla-eval servers are."""
    from websockets.asyncio.server import serve

    async def answer(connection) -> None:
        async for _message in connection:
            await connection.send(reply)

    async def main() -> None:
        async with serve(answer, "127.0.0.1", port, compression=None, max_size=None):
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    asyncio.run(main())


def start_answering(config: TransportConfig, reply: bytes) -> Callable[[], None]:
    """Start a transport server that answers both paths with `reply`: requests directly, and
    each client's newest observation on the stream, from one thread as an inference loop
    would. Returns the function that stops it."""
    server = make_server(config)
    server.start(lambda client_id, payload: reply)
    stop = threading.Event()

    def stream_loop() -> None:
        while not stop.is_set():
            item = server.take_stream(timeout_s=0.1)
            if item is not None:
                server.send_stream(item[0], reply)

    streamer = threading.Thread(target=stream_loop, name="bench-stream", daemon=True)
    streamer.start()

    def shutdown() -> None:
        stop.set()
        streamer.join()
        server.close()

    return shutdown


def serve_transport(config: TransportConfig, reply: bytes, stop: threading.Event) -> None:
    shutdown = start_answering(config, reply)
    print("READY", flush=True)
    stop.wait()
    shutdown()


def main(argv: list[str]) -> None:
    kind, config_json = argv
    options = json.loads(config_json)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    reply = action_reply()
    if kind == "tcp":
        serve_tcp(options["port"], reply, stop)
    elif kind == "websocket":
        serve_websocket(options["port"], reply, stop)
    else:
        serve_transport(CONFIG_CLASSES[kind](**options), reply, stop)


if __name__ == "__main__":
    main(sys.argv[1:])

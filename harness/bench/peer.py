"""The far end of a benchmark round trip, run as its own process.

A round trip measured between two threads of one process shares a GIL and a cache with its
peer; a real policy server is another process (usually another host). So every benchmark
peer (each transport's server, and the raw TCP and websocket floors) runs here, answers every
observation with the same 8x7 action chunk (`harness.bench.payloads`), prints READY once
serving and stops when its stdin closes (`harness.bench.child`). Configs arrive as
JSON on the command line: no pickle anywhere.

    python -m harness.bench.peer <kind> <config-json>
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import struct
import sys
import threading
from collections.abc import Callable

from harness.bench.payloads import action_reply
from transports import TransportConfig, make_server, transport_entry

LENGTH_PREFIX = struct.Struct("<I")


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
    """Answer over `config`'s transport, print READY, stop once `stop` is set."""
    shutdown = start_answering(config, reply)
    print("READY", flush=True)
    stop.wait()
    shutdown()


FLOORS: dict[str, Callable[[int, bytes, threading.Event], None]] = {
    "tcp": serve_tcp, "websocket": serve_websocket}
"""The reference peers, served on `options["port"]`; any other kind is a transport."""


def main(argv: list[str]) -> None:
    """`<kind> <config-json>`: a floor of `FLOORS` or a transport kind (a registered name or
    an import path) with its config's fields.

    Raises:
        UnknownTransport: `kind` is neither.
    """
    kind, config_json = argv
    options = json.loads(config_json)
    if kind in FLOORS:
        serve = functools.partial(FLOORS[kind], options["port"])
    else:
        serve = functools.partial(serve_transport, transport_entry(kind).config_class(**options))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    serve(action_reply(), stop)


if __name__ == "__main__":
    main(sys.argv[1:])

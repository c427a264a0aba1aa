"""The transport contract as plain checks, one per behaviour, each runnable against any
registered kind (a name or an import path 'package.module:ENTRY'): `check(kind)` starts a
real server on a fresh loopback endpoint, talks to it through the public interface only,
and closes everything. `checks_for(kind)` lists the checks that apply to a kind.

`test_conformance.py` runs them over every built-in backend; `test_registry.py` over a
backend defined in a temporary module, by its import path. Timing assertions are generous
upper bounds on deadlines (a hang is the bug they catch), never speed claims: speed lives in
`python -m harness.bench`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import wait_until
from transports import (
    PayloadTooLarge,
    TransportClosed,
    TransportConfig,
    TransportError,
    TransportTimeout,
    make_client,
    make_server,
    transport_entry,
)
from transports.loopback import loopback_config
from transports.mailbox import SetAside

MAX_BYTES = 4 * 1024 * 1024
DEADLINE_SLACK_S = 0.5
READY_TIMEOUT_S = 10.0
REQUEST_SIZES = (0, 1, 65_536 + 1, 301_056)
"""Empty, one byte, just over 64 KiB (a common frame size), a raw 2x224x224x3 observation."""


def config_for(kind: str) -> TransportConfig:
    """A config for `kind` on a fresh loopback endpoint (or a fresh in-process name)."""
    return loopback_config(kind, max_message_bytes=MAX_BYTES, heartbeat_interval_s=0.05,
                           heartbeat_timeout_s=0.3)


def echo(client_id: str, payload: bytes) -> bytes:
    return payload


class Rig:
    """A started server and the clients made for it; a context manager that closes
    everything."""

    def __init__(self, kind: str, handler=echo) -> None:
        self.config = config_for(kind)
        self.handler = handler
        self.server = self.start_server()
        self.clients = []

    def start_server(self):
        server = make_server(self.config)
        server.start(lambda cid, payload: self.handler(cid, payload))
        return server

    def client(self, **overrides):
        client = make_client(dataclasses.replace(self.config, **overrides))
        self.clients.append(client)
        client.wait_ready(READY_TIMEOUT_S)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.close()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_request_bytes_arrive_identical(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        for size in REQUEST_SIZES:
            payload = os.urandom(size)
            assert client.request(payload, timeout_s=5.0) == payload, size


def check_stream_bytes_arrive_identical_both_ways(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        payload = os.urandom(10_000)
        before_ns = time.monotonic_ns()
        client.publish(payload)
        taken = rig.server.take_stream(timeout_s=5.0)
        assert taken[:2] == (client.client_id, payload)
        assert before_ns <= taken.received_ns <= time.monotonic_ns()

        reply = os.urandom(224)
        rig.server.send_stream(client.client_id, reply)
        assert client.take_stream(timeout_s=5.0) == reply


def check_streamed_chunk_is_stamped_when_it_arrives_not_when_taken(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        client.publish(b"hello")
        assert rig.server.take_stream(timeout_s=5.0) is not None
        sent_ns = time.monotonic_ns()
        rig.server.send_stream(client.client_id, b"chunk")
        wait_until(lambda: client.stats.received >= 1, 5.0, "the chunk to arrive")
        time.sleep(0.1)  # the subject of the test: time passes between arrival and take
        payload, arrival_ns = client.take_stream_timed(timeout_s=1.0)
        assert payload == b"chunk"
        assert sent_ns <= arrival_ns <= time.monotonic_ns() - 100_000_000


def check_request_deadline_raises_timeout_without_hanging(kind: str) -> None:
    with Rig(kind) as rig:
        release = threading.Event()

        def slow(client_id, payload):
            release.wait(5.0)
            return payload

        rig.handler = slow
        client = rig.client()
        started = time.monotonic()
        with pytest.raises(TransportTimeout):
            client.request(b"slow", timeout_s=0.2)
        elapsed = time.monotonic() - started
        release.set()
        assert 0.2 <= elapsed < 0.2 + DEADLINE_SLACK_S
        rig.handler = echo
        # A late reply is not mistaken for the answer to the next request.
        assert client.request(b"after", timeout_s=5.0) == b"after"


def check_request_to_absent_server_fails_within_deadline(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        rig.server.close()
        wait_until(lambda: not client.server_present(), 5.0, "presence to drop")
        started = time.monotonic()
        with pytest.raises(TransportError):
            client.request(b"anyone?", timeout_s=0.3)
        assert time.monotonic() - started < 0.3 + DEADLINE_SLACK_S


def check_the_server_says_when_a_client_was_last_heard_taken_or_not(kind: str) -> None:
    """What a session's liveness is counted by: the newest arrival, also after it was taken,
    until the server forgets the client."""
    with Rig(kind) as rig:
        client = rig.client()
        assert rig.server.last_arrival_ns(client.client_id) is None
        before_ns = time.monotonic_ns()
        client.publish(b"first")
        item = rig.server.take_stream(timeout_s=5.0)
        assert item is not None and item.client_id == client.client_id
        first_ns = rig.server.last_arrival_ns(client.client_id)
        assert first_ns == item.received_ns and before_ns <= first_ns
        client.publish(b"second")
        wait_until(lambda: rig.server.last_arrival_ns(client.client_id) != first_ns, 5.0,
                   "the second arrival")
        assert rig.server.last_arrival_ns(client.client_id) > first_ns
        rig.server.forget(client.client_id)
        assert rig.server.last_arrival_ns(client.client_id) is None
        assert rig.server.take_stream(timeout_s=0.2) is None  # its unserved item went too
        rig.server.forget(client.client_id)  # idempotent


def check_newer_observation_supersedes_unserved_one(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        for i in range(1, 6):
            client.publish(b"obs-%d" % i)
        wait_until(lambda: rig.server.stats.received + client.stats.superseded >= 5, 5.0,
                   "all five observations to arrive or be superseded")
        assert rig.server.take_stream(timeout_s=1.0)[:2] == (client.client_id, b"obs-5")
        assert rig.server.take_stream(timeout_s=0.2) is None
        assert rig.server.stats.superseded + client.stats.superseded == 4


def check_streamed_chunks_are_latest_only_on_the_client(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        client.publish(b"hello")  # lets stream-based backends learn the client's address
        assert rig.server.take_stream(timeout_s=5.0) is not None
        for i in range(3):
            rig.server.send_stream(client.client_id, b"chunk-%d" % i)
        # Each chunk lands on the client or is superseded on the way (grpc's server side keeps a
        # latest-only slot per subscriber too).
        wait_until(lambda: client.stats.received + rig.server.stats.superseded >= 3, 5.0,
                   "all three chunks to land or be superseded")
        assert client.take_stream(timeout_s=1.0) == b"chunk-2"  # only the newest is left
        assert client.stats.superseded + rig.server.stats.superseded == 2
        assert client.take_stream(timeout_s=0.1) is None


def check_two_clients_never_see_each_others_replies(kind: str) -> None:
    with Rig(kind) as rig:
        rig.handler = lambda client_id, payload: client_id.encode() + b"|" + payload
        clients = [rig.client(), rig.client()]
        errors = []

        def hammer(client):
            for i in range(50):
                payload = b"%s-%d" % (client.client_id.encode(), i)
                reply = client.request(payload, timeout_s=5.0)
                if reply != client.client_id.encode() + b"|" + payload:
                    errors.append((client.client_id, payload, reply))

        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []

        for client in clients:
            client.publish(b"hi")
        wait_until(lambda: rig.server.stats.received >= 2, 5.0, "both observations")
        a, b = clients
        rig.server.send_stream(a.client_id, b"for-a")
        rig.server.send_stream(b.client_id, b"for-b")
        assert a.take_stream(timeout_s=5.0) == b"for-a"
        assert b.take_stream(timeout_s=5.0) == b"for-b"
        assert a.take_stream(timeout_s=0.2) is None
        assert b.take_stream(timeout_s=0.2) is None


def check_two_megabyte_message_works_and_over_limit_is_rejected(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        big = os.urandom(2 * 1024 * 1024)
        assert client.request(big, timeout_s=10.0) == big
        client.publish(big)
        assert rig.server.take_stream(timeout_s=10.0)[:2] == (client.client_id, big)

        too_big = bytes(MAX_BYTES + 1)
        with pytest.raises(PayloadTooLarge, match="max_message_bytes"):
            client.request(too_big, timeout_s=1.0)
        with pytest.raises(PayloadTooLarge):
            client.publish(too_big)
        with pytest.raises(PayloadTooLarge):
            rig.server.send_stream(client.client_id, too_big)
        assert client.request(b"still serving", timeout_s=5.0) == b"still serving"


def check_client_reconnects_by_itself_after_server_restart(kind: str) -> None:
    with Rig(kind) as rig:
        client = rig.client()
        assert client.request(b"before", timeout_s=5.0) == b"before"
        rig.server.close()
        wait_until(lambda: not client.server_present(), 5.0, "presence to drop")
        rig.server = rig.start_server()
        wait_until(client.server_present, READY_TIMEOUT_S, "presence to return")

        def request_succeeds() -> bool:
            try:
                return client.request(b"after", timeout_s=1.0) == b"after"
            except TransportError:
                return False

        wait_until(request_succeeds, READY_TIMEOUT_S, "a request after the restart")

        def observation_arrives() -> bool:
            client.publish(b"obs")
            return rig.server.take_stream(timeout_s=0.2)[:2] == (client.client_id, b"obs")

        wait_until(observation_arrives, READY_TIMEOUT_S, "an observation after the restart")


def _threads_and_fds() -> tuple[int, int, int]:
    """Python threads, OS threads (libraries' native ones included) and open descriptors."""
    return (threading.active_count(), len(os.listdir("/proc/self/task")),
            len(os.listdir("/proc/self/fd")))


def _open_talk_close(kind: str) -> None:
    rig = Rig(kind)
    client = rig.client()
    assert client.request(b"x", timeout_s=5.0) == b"x"
    client.publish(b"y")
    assert rig.server.take_stream(timeout_s=5.0) is not None
    rig.close()
    client.close()  # idempotent
    rig.server.close()
    with pytest.raises(TransportClosed):
        client.request(b"z", timeout_s=0.5)


def _steady_threads_and_fds(timeout_s: float = 5.0) -> tuple[int, int, int]:
    """The counts once two reads 50 ms apart agree (the warm-up's threads have settled)."""
    deadline = time.monotonic() + timeout_s
    last = _threads_and_fds()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _threads_and_fds()
        if now == last:
            return now
        last = now
    return last


def check_close_leaves_no_thread_or_socket_behind(kind: str) -> None:
    _open_talk_close(kind)  # warm-up: libraries start process-wide threads once
    baseline = _steady_threads_and_fds()
    _open_talk_close(kind)
    # Up to 15 s: zenoh's async runtime reaps an idle worker thread only after 10 s.
    def settled(now: tuple[int, int, int]) -> bool:
        return all(n <= b for n, b in zip(now, baseline, strict=True))

    deadline = time.monotonic() + 15.0
    while not settled(now := _threads_and_fds()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settled(now), (
        f"(python threads, OS threads, fds) {now} did not return to {baseline}")


def check_client_dials_its_connect_address_not_the_listen_address(kind: str) -> None:
    """The seam a fault proxy needs: the server binds `listen`, the client dials `connect`."""
    server_config = config_for(kind)
    server = make_server(server_config)
    server.start(echo)
    unused = config_for(kind).listen  # nothing listens there
    client = make_client(dataclasses.replace(server_config, listen=unused,
                                             connect=server_config.listen))
    try:
        client.wait_ready(10.0)
        assert client.request(b"ping", timeout_s=5.0) == echo("", b"ping")
    finally:
        client.close()
        server.close()


def check_an_older_reply_arriving_after_a_newer_one_does_not_overwrite_it(kind: str) -> None:
    """With an order key set, the client's latest-only inbox keeps the newest by that key,
    not the last to arrive: a reordered or duplicated older chunk is dropped and counted."""
    with Rig(kind) as rig:
        client = rig.client()
        client.order_stream_by(lambda payload: int(payload.split(b"-")[1]))
        client.publish(b"hello")
        assert rig.server.take_stream(timeout_s=5.0) is not None
        rig.server.send_stream(client.client_id, b"chunk-6")
        wait_until(lambda: client.stats.received >= 1, 5.0, "chunk 6 to land")
        rig.server.send_stream(client.client_id, b"chunk-5")  # late, older
        wait_until(lambda: client.stats.received >= 2, 5.0, "chunk 5 to land")
        assert client.take_stream(timeout_s=1.0) == b"chunk-6"
        assert client.stats.out_of_order == 1
        assert client.take_stream(timeout_s=0.1) is None


def check_a_marked_reply_displaced_before_it_was_taken_is_set_aside_not_dropped(
        kind: str) -> None:
    """A payload the caller marks (an error reply) that a newer one displaces before it was
    taken, or that arrives late behind a newer one, reaches the caller's set-aside once;
    unmarked payloads stay latest-only."""
    with Rig(kind) as rig:
        client = rig.client()
        set_aside = SetAside(lambda payload: payload.startswith(b"error"))
        client.order_stream_by(lambda payload: int(payload.split(b"-")[1]), set_aside.offer)
        client.publish(b"hello")
        assert rig.server.take_stream(timeout_s=5.0) is not None
        for received, payload in enumerate((b"error-1", b"chunk-3", b"error-2", b"chunk-4"), 1):
            rig.server.send_stream(client.client_id, payload)  # one at a time: in this order
            wait_until(lambda n=received: client.stats.received >= n, 5.0, f"{payload} to land")
        assert client.take_stream(timeout_s=1.0) == b"chunk-4"
        assert client.take_stream(timeout_s=0.1) is None
        assert [payload for payload, _ in set_aside.take()] == [b"error-1", b"error-2"]
        assert (client.stats.set_aside, client.stats.superseded,
                client.stats.out_of_order) == (2, 1, 0)


class HeldHandler:
    """Test double of a request handler that waits, as a session open or a reset waits for a
    prediction on its policy: a request b"hold" stays inside it until `release` is set (at
    most 20 s); any other request is echoed at once."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        """Set once a held request is inside the handler."""
        self.release = threading.Event()

    def __call__(self, client_id: str, payload: bytes) -> bytes:
        if payload == b"hold":
            self.inside.set()
            self.release.wait(20.0)
            return b"released"
        return payload


def check_a_request_held_in_its_handler_holds_up_no_other_client(kind: str) -> None:
    """Issue 21: zmq ran the handler on its one I/O thread, so a request that took 2-3 s took
    every client's observations, pings and requests with it; zenoh ran queries one at a time.
    While one client's request is held, another's requests, stream (both ways) and presence
    all go on: everything below happens before the held request is let go."""
    with Rig(kind) as rig:
        held = rig.handler = HeldHandler()
        slow, other = rig.client(), rig.client()
        replies: list[bytes] = []
        holder = threading.Thread(
            target=lambda: replies.append(slow.request(b"hold", timeout_s=25.0)))
        holder.start()
        try:
            assert held.inside.wait(5.0), "the held request never reached the handler"
            for i in range(3):
                assert other.request(b"mine-%d" % i, timeout_s=3.0) == b"mine-%d" % i
            other.publish(b"obs")
            assert rig.server.take_stream(timeout_s=3.0)[:2] == (other.client_id, b"obs")
            rig.server.send_stream(other.client_id, b"chunk")
            assert other.take_stream(timeout_s=3.0) == b"chunk"
            # The subject: time passes with the request held, three heartbeat timeouts.
            time.sleep(3 * rig.config.heartbeat_timeout_s)
            assert other.server_present()
            assert holder.is_alive() and replies == []  # all of it while the request was held
        finally:
            held.release.set()
            holder.join(25.0)
        assert replies == [b"released"]


def check_a_client_that_keeps_giving_up_cannot_take_every_request_thread(kind: str) -> None:
    """A client whose requests time out while their handlers still wait, and who sends more,
    has a few in progress at most: the next client's request is still answered."""
    with Rig(kind) as rig:
        held = rig.handler = HeldHandler()
        greedy, other = rig.client(), rig.client()
        try:
            for _ in range(6):
                with pytest.raises(TransportError):  # timed out while held, or refused
                    greedy.request(b"hold", timeout_s=0.2)
            assert held.inside.is_set()
            assert other.request(b"mine", timeout_s=3.0) == b"mine"
        finally:
            held.release.set()


def check_a_message_past_the_servers_limit_is_dropped_and_counted_on_both_paths(
        kind: str) -> None:
    """From a client that allows more than the server (a hostile or misconfigured one), one
    byte past the server's `max_message_bytes`: zmq's and grpc's own limits leave room for
    framing, so the server checks the payload itself on both paths; the request fails with
    a TransportError, and what fits still goes through."""
    with Rig(kind) as rig:
        client = rig.client(max_message_bytes=2 * MAX_BYTES)
        over = bytes(MAX_BYTES + 1)
        client.publish(over)
        with pytest.raises(TransportError):
            client.request(over, timeout_s=1.0)
        wait_until(lambda: rig.server.stats.rejected_oversize >= 2, 5.0,
                   "both messages to be counted")
        assert rig.server.take_stream(timeout_s=0.1) is None
        assert client.request(b"fits", timeout_s=5.0) == b"fits"
        client.publish(b"fits")
        assert rig.server.take_stream(timeout_s=5.0)[:2] == (client.client_id, b"fits")

def check_twenty_clients_at_once_are_all_served(kind: str) -> None:
    """More clients than grpc's old 16 server threads: each client's chunk stream held one,
    and the 16th left none for anyone's pings and requests."""
    with Rig(kind) as rig:
        clients = [rig.client() for _ in range(20)]
        for client in clients:
            assert client.request(client.client_id.encode(), timeout_s=5.0) == \
                client.client_id.encode()
            client.publish(b"obs")
            assert rig.server.take_stream(timeout_s=5.0)[:2] == (client.client_id, b"obs")
            rig.server.send_stream(client.client_id, b"chunk")
            assert client.take_stream(timeout_s=5.0) == b"chunk"
        assert all(client.server_present() for client in clients)

CHECKS: tuple[Callable[[str], None], ...] = (
    check_request_bytes_arrive_identical,
    check_stream_bytes_arrive_identical_both_ways,
    check_streamed_chunk_is_stamped_when_it_arrives_not_when_taken,
    check_request_deadline_raises_timeout_without_hanging,
    check_request_to_absent_server_fails_within_deadline,
    check_newer_observation_supersedes_unserved_one,
    check_the_server_says_when_a_client_was_last_heard_taken_or_not,
    check_streamed_chunks_are_latest_only_on_the_client,
    check_two_clients_never_see_each_others_replies,
    check_two_megabyte_message_works_and_over_limit_is_rejected,
    check_client_reconnects_by_itself_after_server_restart,
    check_close_leaves_no_thread_or_socket_behind,
    check_a_request_held_in_its_handler_holds_up_no_other_client,
    check_twenty_clients_at_once_are_all_served,
    check_an_older_reply_arriving_after_a_newer_one_does_not_overwrite_it,
    check_a_marked_reply_displaced_before_it_was_taken_is_set_aside_not_dropped,
)
"""What every backend must do."""
NETWORKED_CHECKS: tuple[Callable[[str], None], ...] = (
    check_client_dials_its_connect_address_not_the_listen_address,
    # In process (local) the only client to fear is the process itself.
    check_a_client_that_keeps_giving_up_cannot_take_every_request_thread,
    check_a_message_past_the_servers_limit_is_dropped_and_counted_on_both_paths,
)
"""What a backend whose server can live in another process must also do."""


def checks_for(kind: str) -> tuple[Callable[[str], None], ...]:
    """The checks that apply to `kind`, by its registry entry."""
    return CHECKS + (NETWORKED_CHECKS if transport_entry(kind).networked else ())


def check_cases(kinds: tuple[str, ...]) -> list:
    """`pytest.param(kind, check)` for every check of every kind, with readable ids."""
    return [pytest.param(kind, check, id=f"{kind}-{check.__name__.removeprefix('check_')}")
            for kind in kinds for check in checks_for(kind)]

"""The kernel path of network faults: detection by trying, and a veth link into a namespace
that tbf shapes and a link-down cuts, measured with a TCP echo server inside the namespace.

Needs root and iproute2 (skipped otherwise). Every test leaves no namespace of this process
behind (other processes on the machine may have their own `rph-` namespaces meanwhile)."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.faults import kernel
from harness.faults.kernel import KernelFeatureMissing, Netem, NetnsLink, detect, qdisc_plan

pytestmark = pytest.mark.network

ECHO_SERVER_SOURCE = """
import socket, sys, threading
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""

SINK_SERVER_SOURCE = """
import socket, sys, threading
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
def sink(conn):
    with conn:
        header = b""
        while len(header) < 8:
            header += conn.recv(8 - len(header))
        left = int.from_bytes(header, "big")
        while left > 0:
            left -= len(conn.recv(min(left, 65536)))
        conn.sendall(b"ok")
while True:
    conn, _ = server.accept()
    threading.Thread(target=sink, args=(conn,), daemon=True).start()
"""
"""Receives a length-prefixed upload and answers "ok": a one-way transfer, which an echo
cannot give (its acknowledgements queue behind the echoed data in the other direction)."""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None,
    reason="needs root and iproute2 (ip, tc) for network namespaces")


def own_namespaces() -> list[str]:
    """This process's namespaces: links `rph-<pid>-<n>` and probes `rph-probe-<pid>-*`."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    pid = os.getpid()
    return [line.split()[0] for line in out.splitlines()
            if line.startswith((f"rph-{pid}-", f"rph-probe-{pid}-"))]


@pytest.fixture
def no_leftovers():
    assert own_namespaces() == [], "a namespace was left from before this test"
    yield
    assert own_namespaces() == [], "the test left a namespace behind"


@pytest.fixture
def link(no_leftovers):
    if not detect().netns:
        pytest.skip(f"no network namespaces here: {detect().reasons['netns']}")
    with NetnsLink() as made:
        yield made


def start_in(link: NetnsLink, source: str) -> tuple[subprocess.Popen, tuple[str, int]]:
    """Run a server `source` inside `link`'s namespace on `link.ns_ip`: it and its address."""
    proc = subprocess.Popen([*link.exec_prefix(), sys.executable, "-c", source, link.ns_ip],
                            stdout=subprocess.PIPE, text=True)
    return proc, (link.ns_ip, int(proc.stdout.readline()))


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    proc.stdout.close()


@pytest.fixture
def echo_server(link):
    """An echo server inside `link`'s namespace on `link.ns_ip`: its (host, port)."""
    proc, address = start_in(link, ECHO_SERVER_SOURCE)
    try:
        yield address
    finally:
        kill(proc)


@pytest.fixture
def sink_server(link):
    proc, address = start_in(link, SINK_SERVER_SOURCE)
    try:
        yield address
    finally:
        kill(proc)


def kernel_has_netem() -> bool | None:
    """What the kernel's own config says about netem (None: no config to read)."""
    try:
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return None
    return "CONFIG_NET_SCH_NETEM=y" in config or "CONFIG_NET_SCH_NETEM=m" in config


@needs_root
def test_detect_finds_netns_and_tbf_and_knows_whether_netem_is_here(no_leftovers):
    support = detect(fresh=True)
    assert support.netns and support.tbf, support.reasons
    expected = kernel_has_netem()
    if expected is None:
        pytest.skip("no /proc/config.gz to tell whether this kernel has netem")
    assert support.netem is expected, support.reasons
    if not expected:  # this machine: CONFIG_NET_SCH_NETEM unset
        assert "unknown" in support.reasons["netem"], support.reasons
        assert support.reasons["netem"].startswith("netem:")
    assert set(support.reasons) == {"netns", "tbf", "netem"} - {
        name for name in ("netns", "tbf", "netem") if getattr(support, name)}
    assert detect() is detect(), "detect() is cached per process"


def test_detect_without_ip_and_tc_says_not_found_and_does_not_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    support = detect(fresh=True)
    assert (support.netns, support.tbf, support.netem) == (False, False, False)
    assert set(support.reasons) == {"netns", "tbf", "netem"}
    assert support.reasons["netns"] == "ip not found on PATH"
    assert all("not found" in reason for reason in support.reasons.values()), support.reasons


def test_a_command_that_fails_raises_kernel_command_error_with_its_stderr(tmp_path,
                                                                          monkeypatch):
    fake = tmp_path / "tc"
    fake.write_text("#!/bin/sh\necho 'Error: no such thing.' >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kernel.KernelCommandError) as caught:
        kernel.run(["tc", "qdisc", "show"])
    assert caught.value.cmd == ["tc", "qdisc", "show"] and caught.value.returncode == 2
    assert caught.value.stderr == "Error: no such thing." and "tc qdisc show" in str(caught.value)
    with pytest.raises(kernel.KernelCommandError, match="ip not found on PATH"):
        kernel.run(["ip", "link"])


def test_netem_plans_put_tbf_beneath_netem():
    tc = ["tc", "-n", "ns"]
    both = qdisc_plan(tc, "v", 2e6, Netem(0.025, 0.005, 0.01))
    assert both == [
        [*tc, "qdisc", "add", "dev", "v", "root", "handle", "1:", "netem", "limit", "100000",
         "delay", "25000us", "5000us", "loss", "random", "1%"],
        [*tc, "qdisc", "add", "dev", "v", "parent", "1:1", "handle", "10:", "tbf", "rate",
         "2000000bit", "burst", "3028", "limit", "131072"]]
    assert qdisc_plan(tc, "v", None, Netem()) == []
    assert qdisc_plan(["tc"], "v", 1e6, None) == [
        ["tc", "qdisc", "add", "dev", "v", "root", "handle", "1:", *kernel.tbf_args(1e6)]]
    with pytest.raises(ValueError):
        Netem(loss=5.0)


def echo_transfer(address: tuple[str, int], size: int) -> float:
    """Send `size` bytes through the echo server; seconds until all came back, intact."""
    payload = os.urandom(size)
    received = bytearray()
    with socket.create_connection(address, timeout=5) as conn:
        start = time.monotonic()
        sender = threading.Thread(target=conn.sendall, args=(payload,), daemon=True)
        sender.start()
        while len(received) < size:
            chunk = conn.recv(65536)
            assert chunk, "the echo server closed the connection"
            received += chunk
        elapsed = time.monotonic() - start
        sender.join(timeout=5)
    assert bytes(received) == payload
    return elapsed


def upload(address: tuple[str, int], size: int) -> float:
    """Send `size` bytes to the sink server; seconds until it had them all."""
    with socket.create_connection(address, timeout=5) as conn:
        start = time.monotonic()
        conn.sendall(size.to_bytes(8, "big") + os.urandom(size))
        assert conn.recv(2) == b"ok"
        return time.monotonic() - start


@needs_root
def test_the_echo_server_in_the_namespace_is_reachable_and_tbf_limits_the_rate(
        link, echo_server, sink_server):
    assert echo_transfer(echo_server, 1000) < 0.5  # reachable from the host
    unshaped = upload(sink_server, 200_000), echo_transfer(echo_server, 200_000)
    assert link.set_bandwidth(2e6) == kernel.MECHANISM_TBF
    one_way = upload(sink_server, 200_000)  # 1.6 Mbit at 2 Mbit/s: 0.8 s (+ headers)
    both_ways = echo_transfer(echo_server, 200_000)  # 200 kB each way at once
    print(f"200 kB unshaped: {unshaped[0]:.4f} s up, {unshaped[1]:.4f} s echoed; at 2 Mbit/s "
          f"{one_way:.3f} s up ({one_way / 0.8 - 1:+.1%} of 0.8 s), {both_ways:.3f} s echoed")
    assert max(unshaped) < 0.2
    assert one_way == pytest.approx(0.8, rel=0.15)
    assert 0.8 <= both_ways < 0.8 * 1.3  # each direction has its own limit, as one way
    link.set_bandwidth(None)
    assert upload(sink_server, 200_000) < 0.2  # the limit is gone


@needs_root
def test_a_partition_stalls_the_stream_and_tcp_delivers_it_intact_after_the_heal(
        link, echo_server):
    cut_s, chunk = 1.0, bytes(range(256)) * 4
    sent, received = bytearray(), bytearray()
    arrivals: list[float] = []
    stop = threading.Event()
    with socket.create_connection(echo_server, timeout=10) as conn:

        def send() -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                data = i.to_bytes(4, "big") + chunk
                conn.sendall(data)
                sent.extend(data)
                time.sleep(0.01)

        def receive() -> None:
            while data := conn.recv(65536):
                arrivals.append(time.monotonic())
                received.extend(data)

        threads = [threading.Thread(target=f, daemon=True) for f in (send, receive)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        assert arrivals, "the stream did not flow before the cut"
        assert link.set_partition(True) == kernel.MECHANISM_LINK_DOWN
        cut_start, before = time.monotonic(), len(arrivals)
        route = subprocess.run(["ip", "route", "get", link.ns_ip], capture_output=True,
                               text=True)  # the guard: not out through the default route
        assert route.returncode != 0 and "No route to host" in route.stderr, route.stdout
        time.sleep(cut_s - (time.monotonic() - cut_start))
        during = len(arrivals) - before
        cut_end = time.monotonic()
        link.set_partition(False)
        time.sleep(0.2)
        stop.set()
        threads[0].join(timeout=5)
        deadline = time.monotonic() + 8
        while len(received) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.shutdown(socket.SHUT_WR)
        threads[1].join(timeout=5)
    assert during == 0, f"{during} reads arrived while the link was down"
    assert arrivals[-1] > cut_end, "nothing arrived after the heal"
    last_before = max(t for t in arrivals if t <= cut_end)
    first_after = min(t for t in arrivals if t > cut_end)
    stall = first_after - last_before
    print(f"cut {cut_end - cut_start:.3f} s, stream stalled {stall:.3f} s")
    assert stall >= cut_end - cut_start
    assert len(received) == len(sent) and bytes(received) == bytes(sent), "not intact"


@needs_root
def test_set_netem_uses_netem_or_names_it_missing(link):
    if detect().netem:  # a kernel with netem: it is really installed on both ends
        assert link.set_netem(0.01, 0.002, 0.01) == kernel.MECHANISM_NETEM
        shown = subprocess.run(["tc", "qdisc", "show", "dev", link.host_dev],
                               capture_output=True, text=True, check=True).stdout
        assert "netem" in shown
        return
    with pytest.raises(KernelFeatureMissing) as caught:
        link.set_netem(0.025, 0.005, 0.01)
    assert caught.value.feature == "netem" and "netem" in str(caught.value)
    assert caught.value.reason == detect().reasons["netem"]
    assert link.set_netem(0.0) == kernel.MECHANISM_NONE  # nothing asked: nothing missing
    assert link.set_bandwidth(5e6) == kernel.MECHANISM_TBF  # the link still shapes


@needs_root
def test_close_removes_the_namespace_the_veth_and_the_guard_route(no_leftovers):
    made = NetnsLink()
    other = NetnsLink()
    try:
        assert made.subnet != other.subnet and made.host_dev != other.host_dev
        assert sorted(own_namespaces()) == sorted([made.name, other.name])
        made.set_bandwidth(1e6)
        made.set_partition(True)  # closed while cut: nothing of it may stay either
    finally:
        other.close()
        made.close()
        made.close()  # idempotent
    assert own_namespaces() == []
    for dev in (made.host_dev, other.host_dev):
        assert subprocess.run(["ip", "link", "show", "dev", dev],
                              capture_output=True).returncode != 0
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=True).stdout
    assert str(made.subnet) not in routes and str(other.subnet) not in routes
    with pytest.raises(RuntimeError, match="closed"):
        made.set_bandwidth(1e6)


@needs_root
def test_a_link_is_removed_at_exit_by_its_finalizer(tmp_path):
    script = ("from harness.faults.kernel import NetnsLink\n"
              "link = NetnsLink()\nprint(link.name, link.host_dev, flush=True)\n"
              "raise SystemExit(3)  # no close(): the finalizer runs at exit\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 3, result.stderr
    name, host_dev = result.stdout.split()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed.split()
    assert subprocess.run(["ip", "link", "show", "dev", host_dev],
                          capture_output=True).returncode != 0


@needs_root
def test_what_a_killed_process_left_is_removed_by_remove_stale(tmp_path):
    script = ("import os\nfrom harness.faults.kernel import NetnsLink\n"
              "link = NetnsLink()\nprint(link.name, link.host_dev, link.subnet, flush=True)\n"
              "os._exit(0)  # as if killed: no close(), no finalizer\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    name, host_dev, subnet = result.stdout.split()
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name in listed.split(), "the killed process's namespace should still be there"
        removed = kernel.remove_stale()
        assert name in removed and f"unreachable {subnet}" in removed
    finally:
        kernel._teardown(name, host_dev, subnet)  # whatever the assertions found
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed.split()
    assert subprocess.run(["ip", "link", "show", "dev", host_dev],
                          capture_output=True).returncode != 0
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True, check=True).stdout
    assert subnet not in routes

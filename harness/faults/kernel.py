"""Network faults in the kernel: a veth pair into a throwaway network namespace, shaped with
tc, cut by taking the link down.

Why the kernel, where it can: a policy server started inside the namespace
(`[*link.exec_prefix(), python, ...]`, listening on `link.ns_ip`) is reached by the harness
over a real link. Taking the host end of the veth down is a real partition: segments in
flight are lost, both TCP stacks retransmit with exponential backoff, and after the heal the
stream resumes only at the next retransmission, so the stall outlasts the cut (a 1 s cut
stalled a TCP stream 1.22-1.25 s here). A user-space proxy that holds bytes and releases
them at once on heal is optimistic by comparison. tbf on both veth ends is a true
serialisation bottleneck in each direction, with the kernel's queueing; its rate counts
whole frames, as a link's does (200 kB of TCP payload at 2 Mbit/s took 0.83 s, not 0.80).

Detection (trying each feature in a throwaway namespace) and the one runner of `ip`/`tc`
commands live in `harness.faults.kernel_probe`.

What this kernel lacks: netem (`CONFIG_NET_SCH_NETEM` unset, no module), so kernel delay,
jitter and loss are impossible here. `detect()` says so by really trying, inside a
throwaway namespace of its own (never on the host's real interfaces), and
`NetnsLink.set_netem` then raises `KernelFeatureMissing` naming netem and tc's reason. The
caller falls back to the user-space proxy (`harness/faults/proxy.py`) for delay and jitter
and to message-level loss (`harness/faults/messages.py`; dropping bytes inside a TCP stream
corrupts every protocol), and records which mechanism ran: every setter here returns the
mechanism it used. On a kernel with netem, `set_netem` shapes with it (netem at the root,
tbf beneath it when a bandwidth is also set).

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`), `ip` and `tc` from iproute2.
Every `ip`/`tc` call goes through `run()`, which raises `KernelCommandError` with the
command and its stderr. Links are removed by `close()`, by the context manager, and by a
finalizer that also runs at interpreter exit; a process killed by SIGKILL leaves its
namespace behind, and `remove_stale()` removes those of processes that are gone.

Addresses: each link gets a /30 of 10.213.0.0/16 (host end .1, namespace end .2), picked
from the pid and a per-process counter and checked against every address and route of the
root namespace under a file lock, so links of one process or of several never collide. While
the link is up its connected route carries the /30; an `unreachable` route of the lowest
priority stays underneath it, so during a cut the host's packets for the namespace fail
locally instead of leaking out through the default route.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import logging
import os
import re
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from harness.faults.kernel_probe import (  # noqa: F401  (KernelSupport, detect: re-exported)
    NAMESPACE_PREFIX,
    KernelCommandError,
    KernelFeatureMissing,
    KernelSupport,
    detect,
    require,
    run,
)

log = logging.getLogger(__name__)

NETWORK = ipaddress.IPv4Network("10.213.0.0/16")
"""Where the links' /30s come from."""
GUARD_METRIC = 4294967295
"""The metric of the `unreachable` guard route under each link's /30: the lowest priority."""
GUARD_PROTO = "213"
"""The routing protocol number that marks the guard routes as this module's."""

MECHANISM_TBF = "kernel:tbf"
MECHANISM_LINK_DOWN = "kernel:veth-link-down"
MECHANISM_NETEM = "kernel:netem"
MECHANISM_NONE = "none"


# -- shaping plans (pure: testable without the kernel) --------------------------------------


@dataclass(frozen=True)
class Netem:
    """One direction's netem: delay and jitter in seconds, loss as a fraction (0..1)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.jitter_s < 0:
            raise ValueError(f"netem delay_s={self.delay_s}, jitter_s={self.jitter_s}: "
                             "expected >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"netem loss={self.loss}: expected a fraction in [0, 1]")

    @property
    def active(self) -> bool:
        return self.delay_s > 0 or self.jitter_s > 0 or self.loss > 0

    def args(self) -> list[str]:
        spec = ["netem", "limit", "100000",
                "delay", f"{round(self.delay_s * 1e6)}us"]
        if self.jitter_s > 0:
            spec.append(f"{round(self.jitter_s * 1e6)}us")
        if self.loss > 0:
            spec += ["loss", "random", f"{self.loss * 100:.6g}%"]
        return spec


TBF_QUEUE_S = 0.25
"""How much of the rate tbf queues before it drops (at least `TBF_MIN_QUEUE_BYTES`)."""
TBF_MIN_QUEUE_BYTES = 131072
"""A shallower queue drops a TCP sender's slow-start burst and costs retransmission
timeouts: a 200 kB echo at 2 Mbit/s took 1.0-1.25 s with a 25 kB queue, 0.86-0.95 s with
128 KiB (no drops)."""


def tbf_args(bps: float) -> list[str]:
    """tbf for `bps` bits per second of whole frames (headers count: 200 kB of TCP payload
    is ~209 kB on the wire). The bucket holds two full frames or 1 ms of the rate, whichever
    is more, so bursts add little beyond the rate; the queue is `TBF_QUEUE_S` of the rate."""
    rate_bytes = bps / 8.0
    burst = max(3028, int(rate_bytes * 0.001))
    limit = max(TBF_MIN_QUEUE_BYTES, 2 * burst, int(rate_bytes * TBF_QUEUE_S))
    return ["tbf", "rate", f"{int(bps)}bit", "burst", str(burst), "limit", str(limit)]


def qdisc_plan(tc: list[str], dev: str, bps: float | None, netem: Netem | None) -> list[list[str]]:
    """The `tc` commands that install a root qdisc tree on `dev` (`tc` is `["tc"]` or
    `["tc", "-n", ns]`): tbf alone, netem alone, or netem with tbf beneath it. Nothing for
    neither (the caller removes the old root first)."""
    has_netem = netem is not None and netem.active
    if has_netem and bps is not None:
        return [[*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem.args()],
                [*tc, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
                 *tbf_args(bps)]]
    if has_netem:
        return [[*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem.args()]]
    if bps is not None:
        return [[*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", *tbf_args(bps)]]
    return []


# -- links ---------------------------------------------------------------------------------

_counter = itertools.count()
_counter_lock = threading.Lock()


def _lock_path() -> Path:
    directory = "/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir()
    return Path(directory) / "rph-netns.lock"


@contextlib.contextmanager
def _host_lock():
    """Serialises choosing and claiming an address among this machine's processes."""
    with open(_lock_path(), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 address of the root namespace (as a /32) and every route destination no
    wider than `NETWORK` (a wider one, such as a default route, is no collision)."""
    used: list[ipaddress.IPv4Network] = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        match = re.search(r"\sinet\s+(\d+\.\d+\.\d+\.\d+)/", line)
        if match:
            used.append(ipaddress.IPv4Network(match.group(1)))
    for line in run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        net = _route_destination(line)
        if net is not None and net.prefixlen >= NETWORK.prefixlen:
            used.append(net)
    return used


def _route_destination(line: str) -> ipaddress.IPv4Network | None:
    """The destination of one `ip route` line ("10.0.0.0/8 dev ...", "unreachable
    10.213.0.0/30 ...", "local 10.213.0.1 dev ..."), or None ("default ...")."""
    for word in line.split()[:2]:
        try:
            return ipaddress.IPv4Network(word, strict=False)
        except ValueError:
            continue
    return None


def _pick_subnet(pid: int, n: int) -> ipaddress.IPv4Network:
    """A free /30 of `NETWORK`, starting from one derived from the pid and the counter."""
    used = [net for net in _used_networks() if net.overlaps(NETWORK)]
    slots = NETWORK.num_addresses // 4
    start = ((pid % 251) * 64 + n * 7) % slots
    for step in range(slots):
        slot = (start + step) % slots
        candidate = ipaddress.IPv4Network((int(NETWORK.network_address) + 4 * slot, 30))
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise KernelCommandError(["ip", "addr"], None, f"no free /30 left in {NETWORK}")


def _namespaces() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line]


def _link_exists(dev: str) -> bool:
    try:
        run(["ip", "link", "show", "dev", dev])
    except KernelCommandError:
        return False
    return True


def _teardown(namespace: str | None, host_dev: str | None, guard: str | None) -> None:
    """Remove a link's veth, namespace and guard route; each step whatever the others did.
    Deleting the host end destroys the peer too, even while processes still hold the
    namespace open."""
    steps = []
    if host_dev is not None:
        steps.append(["ip", "link", "del", "dev", host_dev])
    if namespace is not None:
        steps.append(["ip", "netns", "del", namespace])
    if guard is not None:
        steps.append(["ip", "route", "del", "unreachable", guard, "metric", str(GUARD_METRIC)])
    for cmd in steps:
        try:
            run(cmd)
        except KernelCommandError as exc:
            if not re.search(r"Cannot find|No such|does not exist", exc.stderr, re.I):
                log.warning("netns link cleanup: %s", exc)


class NetnsLink:
    """A namespace `rph-<pid>-<n>` joined to the root namespace by a veth pair: the host end
    (`host_dev`, `host_ip`) in the root namespace, the peer (`ns_dev`, `ns_ip`) inside. Use
    as a context manager or call `close()`. Setters return the mechanism that ran."""

    def __init__(self) -> None:
        require("netns")
        pid = os.getpid()
        self.closed = False
        self.bandwidth_bps: float | None = None
        self.netem: Netem | None = None
        self.partitioned = False
        with _host_lock():
            existing = set(_namespaces())
            while True:
                with _counter_lock:
                    n = next(_counter)
                name = f"{NAMESPACE_PREFIX}{pid}-{n}"
                host_dev, ns_dev = f"rph{pid:x}h{n:x}", f"rph{pid:x}p{n:x}"
                if len(host_dev) > 15:
                    raise KernelCommandError(["ip", "link", "add", host_dev], None,
                                             "interface name longer than 15 characters")
                if name not in existing and not _link_exists(host_dev):
                    break
            subnet = _pick_subnet(pid, n)
            self.name, self.host_dev, self.ns_dev = name, host_dev, ns_dev
            self.subnet = subnet
            self.host_ip, self.ns_ip = str(subnet[1]), str(subnet[2])
            run(["ip", "netns", "add", name])
            self._finalizer = weakref.finalize(self, _teardown, name, host_dev, str(subnet))
            try:
                self._build()
            except BaseException:
                self._finalizer()
                self.closed = True
                raise

    def _build(self) -> None:
        ns = ["ip", "-n", self.name]
        run(["ip", "link", "add", self.host_dev, "type", "veth",
             "peer", "name", self.ns_dev, "netns", self.name])
        run(["ip", "route", "add", "unreachable", str(self.subnet), "metric", str(GUARD_METRIC),
             "proto", GUARD_PROTO])
        run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_dev])
        run([*ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev])
        run([*ns, "link", "set", "lo", "up"])
        run([*ns, "link", "set", self.ns_dev, "up"])
        run(["ip", "link", "set", self.host_dev, "up"])

    def __repr__(self) -> str:
        return (f"NetnsLink({self.name}: {self.host_dev} {self.host_ip} <-> "
                f"{self.ns_dev} {self.ns_ip}{', closed' if self.closed else ''})")

    def __enter__(self) -> NetnsLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self!r} is closed")

    def _reshape(self, bps: float | None, netem: Netem | None) -> None:
        """Replace both ends' root qdisc trees with the one for (`bps`, `netem`)."""
        had = self.bandwidth_bps is not None or (self.netem is not None and self.netem.active)
        ends = ((["tc"], self.host_dev), (["tc", "-n", self.name], self.ns_dev))
        try:
            for tc, dev in ends:
                if had:
                    run([*tc, "qdisc", "del", "dev", dev, "root"])
                for cmd in qdisc_plan(tc, dev, bps, netem):
                    run(cmd)
        except KernelCommandError:
            for tc, dev in ends:  # leave both ends unshaped rather than half shaped
                with contextlib.suppress(KernelCommandError):
                    run([*tc, "qdisc", "del", "dev", dev, "root"])
            self.bandwidth_bps, self.netem = None, None
            raise
        self.bandwidth_bps, self.netem = bps, netem

    def set_bandwidth(self, bps: float | None) -> str:
        """Limit each direction to `bps` bits per second with tbf on both veth ends; None
        removes the limit."""
        self._check_open()
        if bps is not None:
            if not bps > 0:
                raise ValueError(f"bandwidth bps={bps}: expected > 0 or None")
            require("tbf")
        self._reshape(bps, self.netem)
        return MECHANISM_TBF if bps is not None else MECHANISM_NONE

    def set_partition(self, on: bool) -> str:
        """Cut the link (the host end down: segments are lost and TCP retransmits with
        backoff) or heal it (up again; the address and shaping survive)."""
        self._check_open()
        run(["ip", "link", "set", "dev", self.host_dev, "down" if on else "up"])
        self.partitioned = on
        return MECHANISM_LINK_DOWN if on else MECHANISM_NONE

    def set_netem(self, delay_s: float = 0.0, jitter_s: float = 0.0, loss: float = 0.0) -> str:
        """netem on both veth ends, so each direction gets `delay_s` +/- `jitter_s` and
        drops a `loss` fraction of packets; all zero removes it. Raises
        `KernelFeatureMissing` where the kernel has no netem (as here): fall back to the
        user-space proxy and message-level loss. netem's jitter can reorder packets."""
        self._check_open()
        netem = Netem(delay_s, jitter_s, loss)
        if netem.active:
            require("netem")
            if self.bandwidth_bps is not None:
                require("tbf")
        self._reshape(self.bandwidth_bps, netem if netem.active else None)
        return MECHANISM_NETEM if netem.active else MECHANISM_NONE

    def close(self) -> None:
        """Delete the veth, the namespace and the guard route. Idempotent. Stop processes
        running inside first: a namespace held by a process outlives its name."""
        self._finalizer()
        self.closed = True


def remove_stale() -> list[str]:
    """Remove what processes that no longer exist left behind (killed by SIGKILL, say):
    their namespaces (`rph-<pid>-<n>` with its veth, `rph-probe-<pid>-*`), and guard routes
    whose /30 holds no host address. Returns what it removed. Only the pid decides, so run
    it where this machine's processes share one pid namespace."""
    with _host_lock():  # not while another process is between its guard and its address
        return _remove_stale()


def _remove_stale() -> list[str]:
    removed: list[str] = []
    for name in _namespaces():
        match = re.fullmatch(rf"{NAMESPACE_PREFIX}(probe-)?(\d+)-(\w+)", name)
        if not match or Path(f"/proc/{match.group(2)}").exists():
            continue
        pid, n = int(match.group(2)), match.group(3)
        host_dev = f"rph{pid:x}h{int(n):x}" if not match.group(1) and n.isdigit() else None
        _teardown(name, host_dev, None)
        removed.append(name)
    addresses = [net for net in _used_networks() if net.prefixlen == 32]
    guards = run(["ip", "-4", "route", "show", "proto", GUARD_PROTO, "type", "unreachable"])
    for line in guards.splitlines():
        net = _route_destination(line)
        if (net is not None and net.subnet_of(NETWORK)
                and not any(address.subnet_of(net) for address in addresses)):
            _teardown(None, None, str(net))
            removed.append(f"unreachable {net}")
    return removed

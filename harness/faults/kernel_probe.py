"""What the kernel can do for network faults, found by trying it in a throwaway namespace,
and the one runner of `ip`/`tc` commands (`harness.faults.kernel` builds links with both).

Detection never touches the host's real interfaces: it creates a namespace of its own,
tries each qdisc there, and always deletes it. A missing binary or a permission problem is a
False with its reason, never an exception: the caller falls back and records why.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

NAMESPACE_PREFIX = "rph-"
"""Every namespace this module creates starts with it: `rph-<pid>-<n>`, `rph-probe-<pid>-*`."""
COMMAND_TIMEOUT_S = 10.0



class KernelCommandError(RuntimeError):
    """An `ip` or `tc` command failed (or could not be run): the command and its stderr."""

    def __init__(self, cmd: list[str], returncode: int | None, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"`{' '.join(cmd)}` failed (exit {returncode}): {self.stderr}")


class KernelFeatureMissing(Exception):
    """A kernel feature this needs is absent here; `reason` is what detection found. The
    caller falls back to the user-space proxy or message-level faults."""

    def __init__(self, feature: str, reason: str) -> None:
        self.feature = feature
        self.reason = reason
        super().__init__(f"{feature} is not available: {reason}")


def run(cmd: list[str], *, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run one `ip`/`tc` command; its stdout, or `KernelCommandError` with its stderr (also
    when the binary is missing, not executable or the command hangs)."""
    binary = shutil.which(cmd[0])
    if binary is None:
        raise KernelCommandError(cmd, None, f"{cmd[0]} not found on PATH")
    try:
        result = subprocess.run([binary, *cmd[1:]], capture_output=True, text=True,
                                timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise KernelCommandError(cmd, None, f"timed out after {timeout_s} s") from exc
    except OSError as exc:
        raise KernelCommandError(cmd, None, str(exc)) from exc
    if result.returncode != 0:
        raise KernelCommandError(cmd, result.returncode, result.stderr or result.stdout)
    return result.stdout


# -- detection -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSupport:
    """What this machine can do, found by trying. `reasons` says why each False one is."""

    netns: bool
    tbf: bool
    netem: bool
    reasons: dict[str, str] = field(default_factory=dict)


def _not_root_prefix() -> str:
    euid = os.geteuid()
    return "" if euid == 0 else f"not root (euid {euid}); "


def _probe() -> KernelSupport:
    reasons: dict[str, str] = {}
    missing = [binary for binary in ("ip", "tc") if shutil.which(binary) is None]
    if "ip" in missing:
        reasons["netns"] = "ip not found on PATH"
        no_ns = "not probed: no namespace to probe in (ip not found on PATH)"
        reasons["tbf"] = reasons["netem"] = (
            "tc not found on PATH" if "tc" in missing else no_ns)
        return KernelSupport(False, False, False, reasons)
    name = f"{NAMESPACE_PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        run(["ip", "netns", "add", name])
    except KernelCommandError as exc:
        reason = f"{_not_root_prefix()}ip netns add: {exc.stderr}"
        reasons["netns"] = reason
        reasons["tbf"] = reasons["netem"] = f"not probed: no namespace ({reason})"
        return KernelSupport(False, False, False, reasons)
    netns = tbf = netem = False
    try:
        try:
            run(["ip", "-n", name, "link", "set", "lo", "up"])
            netns = True
        except KernelCommandError as exc:
            reasons["netns"] = f"{_not_root_prefix()}ip link set lo up: {exc.stderr}"
        if netns and "tc" in missing:
            reasons["tbf"] = reasons["netem"] = "tc not found on PATH"
        elif netns:
            netem, reason = _try_qdisc(name, ["netem", "delay", "1ms"])
            if reason:
                reasons["netem"] = reason
            tbf, reason = _try_qdisc(name, ["tbf", "rate", "10mbit", "burst", "32kbit",
                                             "latency", "50ms"])
            if reason:
                reasons["tbf"] = reason
        else:
            reasons["tbf"] = reasons["netem"] = "not probed: the probe namespace is unusable"
    finally:
        try:
            run(["ip", "netns", "del", name])
        except KernelCommandError as exc:
            log.warning("could not delete the probe namespace %s: %s", name, exc)
    return KernelSupport(netns, tbf, netem, reasons)


def _try_qdisc(namespace: str, spec: list[str]) -> tuple[bool, str]:
    """Attach `spec` as the root qdisc of lo in `namespace` and take it off again."""
    try:
        run(["tc", "-n", namespace, "qdisc", "add", "dev", "lo", "root", *spec])
    except KernelCommandError as exc:
        return False, f"{_not_root_prefix()}{spec[0]}: {exc.stderr}"
    try:
        run(["tc", "-n", namespace, "qdisc", "del", "dev", "lo", "root"])
    except KernelCommandError as exc:
        log.debug("could not remove the probe %s qdisc: %s", spec[0], exc)
    return True, ""


@functools.cache
def _detect_cached() -> KernelSupport:
    return _probe()


def detect(*, fresh: bool = False) -> KernelSupport:
    """What the kernel supports, probed once per process in a throwaway namespace (created
    and always deleted). `fresh=True` probes again and leaves the cache alone. Never raises
    for a missing binary or a permission problem: those are False with a reason."""
    return _probe() if fresh else _detect_cached()


detect.cache_clear = _detect_cached.cache_clear  # type: ignore[attr-defined]


def require(feature: str) -> None:
    """KernelFeatureMissing naming `feature` and why, if detection found it absent."""
    support = detect()
    if not getattr(support, feature):
        raise KernelFeatureMissing(feature, support.reasons.get(feature, "unknown reason"))

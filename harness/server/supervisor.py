"""Start, stop, kill, pause and restart the policy server as a child process.

The loop job, the tests and (next) the fault controller all need a server process they can
do things to: SIGKILL it, SIGSTOP/SIGCONT it, SIGTERM it (drain), start it again on the same
config. Two guarantees make that safe to use in a benchmark:

* Start-up fails fast and says why. The supervisor waits for the child's `READY <port>` line
  *or its exit*, whichever comes first; a child that dies at start-up (a bad override, a
  missing package, a port in use) raises `ServerStartError` quoting its last log lines
  within seconds, not after `startup_timeout_s` of silence.
* The child never outlives the harness. It gets a lifeline, the read end of a pipe whose
  write end only this process holds: when the harness exits in any way, SIGKILL included,
  the pipe closes and the server drains (`harness.server.serve.watch_lifeline`). The child
  runs in a process group of its own within the harness's session, so a child that is
  stopped (SIGSTOP) when the harness dies is sent SIGHUP and SIGCONT by the kernel as its
  group becomes orphaned, and exits too.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.overrides import quoted_override
from harness.server.child_output import ChildOutput, exit_status

log = logging.getLogger(__name__)

LIFELINE_ENV = "HARNESS_LIFELINE_FD"
"""Environment variable naming the child's inherited end of the lifeline pipe."""

READY_PREFIX = "READY "
TAIL_LINES = 30
"""Lines of the child's output kept for an error message."""
DRAIN_TIMEOUT_S = 15.0


def proc_state(pid: int, tid: int | None = None) -> str:
    """The one-letter state of a process (its main thread), or of its thread `tid`, in /proc
    (R, S, T, Z, ...); "" if it is gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped. The main thread shows T as soon as it stops,
    while the group stop completes only when the last thread has taken the signal; until
    then the kernel does not count the process as stopped (a dying parent's orphaned process
    group is sent no SIGHUP). On a loaded machine the server's other threads can take
    seconds to be scheduled."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return all(proc_state(pid, tid) in ("T", "t", "") for tid in tids) and any(
        proc_state(pid, tid) in ("T", "t") for tid in tids)


EXCEPTION_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Unavailable|"
                            r"Mismatch|Exit)\b:?.*)$")
"""A traceback's last line, e.g. `ValueError: env.cameras=[]: ...`."""


class ServerStartError(RuntimeError):
    """The server process exited, or did not report ready in time, at start-up."""


class ServerSupervisor:
    """`python -m harness.server <overrides>` as a child process the harness controls.

    Not thread-safe: one thread (the loop job, a test, the fault controller) drives it.
    """

    def __init__(self, overrides: list[str], run_dir: Path, *, startup_timeout_s: float,
                 command_prefix: tuple[str, ...] = (), module: str = "harness.server") -> None:
        self.overrides = list(overrides)
        self.module = module
        """What runs: the policy server, or `harness.server.router` (the Zenoh router)."""
        self.command_prefix = list(command_prefix)
        """Run the server through this, e.g. `ip netns exec <ns>` (which execs, so the pid
        the signals go to is the server's)."""
        self.run_dir = Path(run_dir)
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self.health_port: int | None = None
        self.starts = 0
        self._lifeline: int | None = None
        self._output: ChildOutput | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_lines(self) -> list[str]:
        """The child's last lines of output (stdout and stderr), oldest first."""
        return list(self._output.tail) if self._output is not None else []

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and block until it serves.

        Raises:
            ServerStartError: the child exited first (its last lines are in the message), or
                it did not report ready within `startup_timeout_s` (it is then killed).
        """
        if self.alive():
            raise RuntimeError(f"server pid {self.pid} is already running")
        self.starts += 1
        self.health_port = None
        read_end, self._lifeline = os.pipe()
        command = [*self.command_prefix, sys.executable, "-m", self.module, *self.overrides,
                   quoted_override("hydra.run.dir", self.run_dir), "hydra.output_subdir=null"]
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                bufsize=1, pass_fds=(read_end,), process_group=0,
                env={**os.environ, LIFELINE_ENV: str(read_end)})
        finally:
            os.close(read_end)  # the child holds its copy; ours would keep the pipe open
        ready = threading.Event()

        def take_ready(line: str) -> bool:
            """The READY line (once): the health port; every other line is output."""
            if not line.startswith(READY_PREFIX) or ready.is_set():
                return False
            self.health_port = int(line.split()[1])
            ready.set()
            return True

        self._output = ChildOutput(self.process, name=f"server-{self.process.pid}-output",
                                   label=f"server pid {self.process.pid}",
                                   tail_lines=TAIL_LINES, on_line=take_ready, logger=log)
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready.wait(0.05):
            if self.process.poll() is not None:
                self._output.join(1.0)  # let it take the dead child's last lines
                raise ServerStartError(self._describe_exit("exited during start-up"))
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(self._describe_exit(
                    f"did not report ready within {self.startup_timeout_s} s"))
        log.info("policy server pid %d ready (start %d, health port %d)", self.pid,
                 self.starts, self.health_port)

    def _describe_exit(self, what: str) -> str:
        """One line: what happened and, when the server died of an exception, that exception
        (the traceback's last line); its last output lines follow only when there is none."""
        status = exit_status(self.process)
        lines = self.last_lines()
        causes = [m.group(1) for m in map(EXCEPTION_LINE.match, lines) if m]
        if causes:
            return (f"policy server {what} ({status}): {causes[-1]} (its log: "
                    f"{self.run_dir})")
        tail = "\n".join(f"    {line}" for line in lines) or "    (no output)"
        return (f"policy server ({' '.join(self.overrides) or 'default config'}) {what} "
                f"({status}); its last lines:\n{tail}\n(full log in {self.run_dir})")

    def _signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it."""
        self._signal(signal.SIGKILL)
        self._wait()

    def pause(self, timeout_s: float = 5.0) -> None:
        """SIGSTOP: the process stays, its sockets stay open, nothing answers (a stall).
        Returns once the kernel shows every thread stopped: a signal is delivered
        asynchronously, and a harness that died before the group stop completed would leave
        a server stopped after its process group was checked for orphans, stopped for good."""
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout_s
        while self.alive() and not all_threads_stopped(self.process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"server pid {self.pid} did not stop within {timeout_s} s")
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self._signal(signal.SIGCONT)

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> int | None:
        """SIGTERM: the server finishes the inference in progress and exits; killed if it
        has not within `timeout_s`. Returns its exit status (None if none was running)."""
        if not self.alive():
            return self._wait()
        self._signal(signal.SIGCONT)  # a paused server cannot drain
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("server pid %d did not drain within %.0f s: killing it", self.pid,
                        timeout_s)
            self.kill()
        return self._wait()

    def restart(self) -> None:
        """Kill the running server, if any, and start it again on the same config."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Drain the server if it runs and release the lifeline. Idempotent."""
        self.drain()

    def _wait(self) -> int | None:
        code = self.process.wait() if self.process is not None else None
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        return code

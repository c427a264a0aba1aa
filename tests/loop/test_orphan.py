"""A sweep job whose sweep process was SIGKILLed stops: interrupted, then ended, so it
neither runs on holding its server's port nor blocks forever handing over its result. In
CI the first version's interrupt did nothing: started in the background, the job had
SIGINT ignored, and it ended without its clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent("""
    import sys, time
    from harness.loop.orphan import watch_parent
    marker = sys.argv[1]
    watch_parent(poll_s=0.05, exit_after_s=1.0)
    open(marker + ".started", "w").close()
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:  # the job's clean-up runs here, then it blocks (as loky does)
        open(marker + ".interrupted", "w").close()
        while True:
            time.sleep(0.05)
""")
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    print(child.pid, flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (reaped by init soon) is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.slow
def test_a_job_whose_parent_was_killed_is_interrupted_then_ended(tmp_path):
    marker = str(tmp_path / "job")
    # Started as in the background (nohup, CI): SIGINT ignored, which the job inherits.
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, marker],
                              stdout=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    child = int(parent.stdout.readline())
    try:
        assert wait_for(lambda: os.path.exists(marker + ".started"), 30)
        time.sleep(0.3)
        assert alive(child) and not os.path.exists(marker + ".interrupted")  # parent alive
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_for(lambda: os.path.exists(marker + ".interrupted"), 10)
        assert wait_for(lambda: not alive(child), 10)  # blocked after clean-up: ended anyway
    finally:
        for pid in (parent.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

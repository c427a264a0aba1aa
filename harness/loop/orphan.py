"""A sweep job that outlives its sweep stops.

The joblib launcher runs jobs in loky worker processes. If the sweep's own process dies
without a chance to clean up (SIGKILL, the OOM killer), its workers are not told: each
finishes the job it has, may start another one already queued, then blocks forever trying
to hand its result to a parent that is gone, still holding its server's port. A re-run of
the sweep would then find the port of job n taken by the orphan of job n, and two writers
would share a run directory. So a job in a worker process watches its parent: once the
parent is gone it interrupts the job (the episode in progress is lost; the finished ones
stay written and the re-run skips them; the job's servers, proxies and namespaces are
closed by the job's own clean-up) and, if the worker is still alive a little later (blocked
handing over its result), ends the process.
"""

from __future__ import annotations

import _thread
import logging
import multiprocessing
import os
import signal
import threading
import time

log = logging.getLogger(__name__)
POLL_S = 0.5
EXIT_AFTER_S = 15.0
"""Time the job's own clean-up gets after the interrupt before the process exits."""


def in_worker_process() -> bool:
    """True in a loky (joblib launcher) worker: the processes that can be orphaned."""
    return multiprocessing.current_process().name.startswith("LokyProcess")


_watcher: threading.Thread | None = None


def watch_parent_once() -> None:
    """`watch_parent` for this process, once: a worker runs many jobs."""
    global _watcher
    if _watcher is None:
        _watcher = watch_parent()


def watch_parent(*, poll_s: float = POLL_S, exit_after_s: float = EXIT_AFTER_S) -> threading.Thread:
    """Start a daemon thread that interrupts the main thread (KeyboardInterrupt) when this
    process's parent changes, and ends the process `exit_after_s` later if it still runs.

    Called from the main thread, it also makes SIGINT raise KeyboardInterrupt: a process
    started in the background (`nohup`, `cmd &`, CI) inherits SIGINT ignored, and then
    `interrupt_main` does nothing and the job would end without its clean-up."""
    parent = os.getppid()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the sweep's process (pid %d) is gone: stopping this job; its finished "
                  "episodes stay written, a re-run of the sweep skips them", parent)
        _thread.interrupt_main()
        time.sleep(exit_after_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread

"""Robots as processes (`clients_as=processes`): each robot of the loop job a process of its own.

Robots in threads share the harness's interpreter lock: at 8 or 16 robots the physics, the
engines and the transports' Python take turns in one process, and what is measured is partly
the harness. As processes they share only what real robots share, the policy server.

The harness (this module's `RobotProcesses`) starts one `python -m harness.jobs.robots` per
robot with the run's own overrides, so the child composes the same config, and talks to it
in JSON lines: a spec first (task, robot index, the addresses it dials), then one episode
index at a time; the child answers `ROBOT {"ready": ...}` once its server answers and
`ROBOT {"ended": i, "success": ...}` after each episode, which it has written to the run
directory itself (each file atomically, as the threads do). Its other output is its log
(kept in `robot<r>/` of the run directory; warnings and errors are passed on).

Episodes go to whichever robot is free, as with threads. A robot whose process dies loses
the episode it was running (not written: `resume=` runs it again) and the run goes on with
the others; the run then exits 1 naming it. One that is stopped (SIGSTOP) is waited for, and
the run's log names it until it goes on. The child never outlives the harness: its stdin
is a pipe only the harness writes, and end of file in the middle of an episode means the
harness is gone, so the child exits at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.overrides import quoted_override
from harness.results.episodes import episode_id
from harness.results.store import ResultsStore
from harness.server.child_output import ChildOutput, exit_status
from harness.server.supervisor import proc_state

log = logging.getLogger(__name__)

MESSAGE_PREFIX = "ROBOT "
TAIL_LINES = 30
START_MARGIN_S = 120.0
"""What a robot may take to start beyond `server.startup_timeout_s` (its own wait for the
server): imports, composing the config, building its env."""
EXIT_WAIT_S = 30.0
STOPPED_NOTICE_S = 5.0
"""How long a robot process may be stopped (SIGSTOP, a debugger) in an episode before the
harness says why the run is waiting; said again every `STOPPED_REPEAT_S`."""
STOPPED_REPEAT_S = 60.0


class RobotProcess:
    """One robot's process: started with the run's overrides, fed episodes one at a time."""

    def __init__(self, overrides: list[str], spec: dict, log_dir: Path) -> None:
        self.robot = int(spec["robot"])
        self.task = int(spec["task"])
        self.log_dir = log_dir
        self._messages: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        command = [sys.executable, "-m", "harness.jobs.robots", *overrides,
                   quoted_override("hydra.run.dir", str(log_dir)), "hydra.output_subdir=null",
                   f"hydra.job.name=robot-task{spec['task']}"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1,
                                        process_group=0)
        self._output = ChildOutput(
            self.process, name=f"robot-{self.robot}-output",
            label=f"robot {self.robot} (pid {self.process.pid})", tail_lines=TAIL_LINES,
            on_line=self._take_message, on_end=lambda: self._messages.put(None), logger=log)
        self._send(spec)

    def _send(self, message: dict) -> bool:
        """Write one line to the child; False if it is gone."""
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def _take_message(self, line: str) -> bool:
        """A `ROBOT {...}` line to the messages (None goes there once the output ends)."""
        if not line.startswith(MESSAGE_PREFIX):
            return False
        try:
            self._messages.put(json.loads(line[len(MESSAGE_PREFIX):]))
        except json.JSONDecodeError:
            return False  # a log line that happens to start so: keep it as one
        return True

    def wait_ready(self, timeout_s: float) -> bool:
        """Whether the child said it is ready (its server answered) within `timeout_s`."""
        try:
            message = self._messages.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            self._output.tail.append(f"(not ready within {timeout_s:.0f} s: killed)")
            return False
        return message is not None and "ready" in message

    def run(self, index: int) -> bool | None:
        """Run episode `index` on the robot: whether it succeeded, None if the process died.

        The harness waits for a stopped robot, as for a slow one (SIGCONT and it goes on),
        but says so: a run that only waits would look hung."""
        if not self._send({"episode": index}):
            return None
        stopped = _StoppedNotice(self, index)
        while True:
            try:
                message = self._messages.get(timeout=1.0)
                break
            except queue.Empty:
                stopped.check()
        stopped.check()
        if message is None or message.get("ended") != index:
            return None
        log.info("robot %d: %s", self.robot, message.get("line", ""))
        return bool(message["success"])

    def finish(self) -> int | None:
        """No more episodes: close its stdin and reap it (killed if it lingers)."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            return self.process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def describe(self, what: str) -> str:
        """One line on what happened to the robot, with its exit status and last log lines."""
        status = exit_status(self.process)
        last = [line for line in self._output.tail  # its trouble, not its episodes
                if line.strip() and "][INFO]" not in line and "][DEBUG]" not in line][-3:]
        return (f"robot {self.robot}'s process (pid {self.process.pid}) {what} ({status})"
                + (f"; its last lines: {' | '.join(last)}" if last else "")
                + f"; its log: {self.log_dir}")


class _StoppedNotice:
    """Tells the run's log when a robot process in an episode is stopped (state T), and when
    it goes on again."""

    def __init__(self, robot: RobotProcess, index: int) -> None:
        self._robot, self._index = robot, index
        self._since: float | None = None
        self._said: float | None = None

    def check(self) -> None:
        now = time.monotonic()
        pid = self._robot.process.pid
        if proc_state(pid) == "T":
            self._since = self._since or now
            stopped_s = now - self._since
            if stopped_s >= STOPPED_NOTICE_S and (
                    self._said is None or now - self._said >= STOPPED_REPEAT_S):
                self._said = now
                log.warning("robot %d's process (pid %d) has been stopped for %.0f s in task "
                            "%d episode %d; the run waits for it: SIGCONT it to go on, or "
                            "kill it (its episode is lost; resume= runs it again)",
                            self._robot.robot, pid, stopped_s, self._robot.task,
                            episode_id(self._robot.task, self._index))
        elif self._since is not None:
            if self._said is not None:
                log.warning("robot %d's process (pid %d) goes on after %.0f s stopped",
                            self._robot.robot, pid, now - self._since)
            self._since = self._said = None


@dataclasses.dataclass
class RobotFailure:
    """A robot process that did not finish its share: `started` whether it ever served."""

    message: str
    started: bool
    exit_status: int | None


def run_robot_processes(config, overrides: list[str], dial: list, *, task: int,
                        pending: list[int], run_dir: Path, progress) -> list[RobotFailure]:
    """Run the task's `pending` episodes on `config.clients` robot processes that dial
    `dial` (transport configs: one server, or each replica); `progress.episode_ended` is
    told of each. Returns what went wrong, one entry per robot that died or never started
    (empty when every episode ran)."""
    episodes: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in pending:
        episodes.put(index)
    dial_fields = [dataclasses.asdict(transport) for transport in dial]
    store = ResultsStore(run_dir, clean=False)  # to ask whether a lost episode was written
    robots: list[RobotProcess] = []
    try:
        for robot in range(min(config.clients, len(pending))):  # no robot without work
            robots.append(RobotProcess(
                overrides, {"task": task, "robot": robot, "dial": dial_fields,
                            "run_dir": str(run_dir)},
                run_dir / f"robot{robot}"))
        with ThreadPoolExecutor(len(robots), thread_name_prefix="robot-feed") as pool:
            start_s = config.server.startup_timeout_s + START_MARGIN_S
            outcomes = list(pool.map(lambda r: _feed(r, episodes, progress, start_s, store),
                                     robots))
        return [failure for failure in outcomes if failure is not None]
    finally:
        for robot in robots:
            robot.kill()  # on the way out of an error or an interrupt; no-op once reaped


def _feed(robot: RobotProcess, episodes: queue.SimpleQueue[int], progress,
          start_s: float, store: ResultsStore) -> RobotFailure | None:
    """Give `robot` episodes until none is left or it dies."""
    if not robot.wait_ready(start_s):
        robot.finish()
        return RobotFailure(robot.describe("exited during start-up"), False,
                            robot.process.returncode)
    while True:
        try:
            index = episodes.get_nowait()
        except queue.Empty:
            code = robot.finish()
            if code == 0:
                return None
            return RobotFailure(robot.describe("exited with an error after its episodes"),
                                True, code)
        success = robot.run(index)
        if success is None:
            robot.finish()
            episode = episode_id(robot.task, index)
            fate = ("its row was written before it died" if store.done(robot.task, episode)
                    else "which is not written (resume= runs it again)")
            return RobotFailure(robot.describe(f"died in task {robot.task} episode {episode}, "
                                               f"{fate}"), True, robot.process.returncode)
        progress.episode_ended(success)


# ---- the child --------------------------------------------------------------------------------


def _say(message: dict) -> None:
    print(MESSAGE_PREFIX + json.dumps(message), flush=True)


class _Orders:
    """The harness's lines on stdin, read by a thread: end of file while an episode runs
    means the harness is gone (it closes stdin only between episodes), and the robot exits
    at once rather than finish an episode nobody will count."""

    def __init__(self) -> None:
        self.busy = False
        self._lines: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, name="orders", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            self._lines.put(json.loads(line))
        if self.busy:
            logging.getLogger(__name__).warning("the harness that started this robot is gone")
            os._exit(1)
        self._lines.put(None)

    def next(self) -> dict | None:
        order = self._lines.get()
        self.busy = order is not None
        return order


def serve_episodes(config) -> int:
    """The child's life: build the robot the spec describes, tell the harness it is ready,
    run the episodes it is given; the process's exit status."""
    from harness.faults.controller import Mechanisms
    from harness.faults.schedule import FaultApply
    from harness.jobs.episodes import robot_engine, robot_env, run_one_episode
    from harness.results.video import VideoRecorder
    from harness.server.launch import wait_for_server
    from harness.server.replicas import replica_client

    orders = _Orders()
    spec = orders.next()
    if spec is None:
        return 0
    orders.busy = False
    task, robot, run_dir = int(spec["task"]), int(spec["robot"]), Path(spec["run_dir"])
    dial = [dataclasses.replace(config.transport, **{k: v for k, v in fields.items()
                                                     if k != "security"})
            for fields in spec["dial"]]
    recorder = VideoRecorder(run_dir, config.record)
    env = robot_env(config, task, recorder)
    if env is None:
        return 2
    client = replica_client(dial, robot)
    try:
        if not wait_for_server(client, dial[0], timeout_s=config.server.startup_timeout_s):
            return 1
        mechanisms = Mechanisms(modelled=config.faults.apply is FaultApply.modelled,
                                link=str(config.faults.link))
        engine = robot_engine(config, env, client, mechanisms)
        store = ResultsStore(run_dir, clean=False)  # other robots are writing there
        _say({"ready": robot})
        while (order := orders.next()) is not None:
            index = int(order["episode"])
            ended = run_one_episode(config, store, env, engine, task=task, index=index,
                                    mechanisms=mechanisms, recorder=recorder, robot=robot)
            orders.busy = False
            _say({"ended": index, "success": bool(ended.success), "line": ended.line})
        engine.close()
        return 0
    finally:
        client.close()
        env.close()


if __name__ == "__main__":
    import hydra
    from omegaconf import DictConfig

    from harness.config import config_dir, register_configs, validate_or_exit

    register_configs()

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
    def _main(cfg: DictConfig) -> None:
        sys.exit(serve_episodes(validate_or_exit(cfg)))

    _main()

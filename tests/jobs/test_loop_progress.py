"""The loop job's progress bar: it names what runs (env, task, transport, fault schedule,
client mode) and counts successes as episodes end, also when robots end them at once."""

from __future__ import annotations

import io
import re
import threading

from tqdm import tqdm

from harness import api
from harness.jobs.loop import TaskProgress, progress_description


def _bar(total: int) -> tuple[tqdm, io.StringIO]:
    """A real tqdm bar drawn into a string, redrawn on every update."""
    out = io.StringIO()
    return tqdm(total=total, desc="task", file=out, mininterval=0, miniters=1), out


def test_postfix_counts_successes_of_the_episodes_ended_so_far():
    bar, out = _bar(3)
    progress = TaskProgress(bar)
    drawn = []
    for success in (True, False, True):
        progress.episode_ended(success)
        drawn.append(out.getvalue().rsplit("\r", 1)[-1])
    bar.close()
    assert [re.findall(r"ok \d+/\d+", line) for line in drawn] == [
        ["ok 1/1"], ["ok 1/2"], ["ok 2/3"]]
    assert all(line.startswith("task: ") for line in drawn) and bar.n == 3


def test_robots_ending_episodes_at_once_lose_no_count():
    robots, each = 8, 50
    bar, out = _bar(robots * each)
    progress = TaskProgress(bar)
    start = threading.Barrier(robots)

    def robot(r: int) -> None:
        start.wait()
        for i in range(each):
            progress.episode_ended(success=(r + i) % 3 == 0)

    threads = [threading.Thread(target=robot, args=(r,)) for r in range(robots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    bar.close()
    successes = sum((r + i) % 3 == 0 for r in range(robots) for i in range(each))
    assert (progress.ended, progress.successes, bar.n) == (400, successes, 400)
    assert re.findall(r"ok \d+/\d+", out.getvalue().rsplit("\r", 1)[-1]) == [
        f"ok {successes}/400"]


def test_description_names_transport_faults_and_client_mode():
    _, config = api.compose(["transport=zmq", "faults=lte", "client=synchronous"])
    assert progress_description(config, 3) == (
        "mujoco_pick_place task 3 | zmq | faults=lte | synchronous")

"""Episode videos (`record=`): real jobs (MuJoCo pick-and-place, LIBERO) filmed, encoded by
ffmpeg and read back with imageio; the bar under each frame says the tick's client state and
the episode's fault windows; `failures` keeps only failed episodes; resume neither loses nor
duplicates a video; `none` builds no renderer; a missing encoder is one line at startup."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs import make_env
from envs.mujoco_tasks import mujoco  # imported there after MUJOCO_GL is set (headless)
from envs.slowed import SlowedEnv
from harness import api
from harness.client.states import ActionSource, ClientState, TickResult
from harness.faults.schedule import FaultWindow
from harness.jobs.episodes import fault_spans as _fault_spans
from harness.jobs.loop import run_loop
from harness.results import overlay
from harness.results.overlay import FaultSpan, FrameStatus, draw_frame, fit
from harness.results.video import VideoRecorder, VideoUnavailable, check_available
from tests.conftest import hide_package

imageio = pytest.importorskip("imageio.v2", reason="pip install 'robot-policy-harness[video]'")

FAST = ["transport=local", "server=inprocess", "env.episodes_per_task=1"]
"""One mujoco_pick_place episode, robot and server in this process (~2 s)."""
PARTITION = ["faults=partition_3s", "faults.apply=modelled", "latency.kind=fixed",
             "faults.timed.0.start_s=0.3", "faults.timed.0.duration_s=0.5"]
"""A modelled partition over ticks 6-16: the robot falls back (STALLED) inside it."""
KEY = "task000-ep0001"


class CountingRenderer(mujoco.Renderer):
    """mujoco's own renderer, counting how many are built (test double: counts only)."""

    built = 0

    def __init__(self, *args, **kwargs) -> None:
        type(self).built += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def count_renderers(monkeypatch) -> type[CountingRenderer]:
    monkeypatch.setattr(CountingRenderer, "built", 0)
    monkeypatch.setattr(mujoco, "Renderer", CountingRenderer)
    return CountingRenderer


def _row(run_dir: Path, key: str = KEY) -> dict:
    return json.loads((run_dir / "episodes" / f"{key}.json").read_text())


def _bar_colour(frame: np.ndarray, scene_height: int = 256) -> np.ndarray:
    """The median colour of the bar's first rows (above its text), across the frame."""
    return np.median(frame[scene_height + 1:scene_height + 4].reshape(-1, 3), axis=0)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict:
    """One real episode under a modelled partition, record=all, with mujoco.Renderer
    counted."""
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CountingRenderer, "built", 0)
        patch.setattr(mujoco, "Renderer", CountingRenderer)
        result = api.run([*FAST, *PARTITION, "record=all"], run_dir=run_dir)
        built = CountingRenderer.built
    assert result.status == 0
    trace = pd.read_parquet(run_dir / "traces" / f"{KEY}.parquet")
    reader = imageio.get_reader(run_dir / "videos" / f"{KEY}.mp4")
    frames = [np.asarray(frame) for frame in reader]
    meta = reader.get_meta_data()
    reader.close()
    return {"run_dir": run_dir, "row": _row(run_dir), "trace": trace, "frames": frames,
            "meta": meta, "renderers": built}


@pytest.mark.slow
def test_recorded_episode_has_one_frame_per_tick_and_one_at_the_end(recorded):
    row, frames = recorded["row"], recorded["frames"]
    assert row["video"] == f"videos/{KEY}.mp4"  # relative to the run directory
    assert len(frames) == row["steps"] + 1 == len(recorded["trace"]) + 1
    assert {frame.shape for frame in frames} == {(304, 256, 3)}  # 256x256 scene + 48 bar
    assert recorded["meta"]["fps"] == 20.0  # control_hz: plays in control time
    assert recorded["renderers"] == 1  # the video's own, built once (no policy camera)
    assert [p.name for p in (recorded["run_dir"] / "videos").iterdir()] == [f"{KEY}.mp4"]


@pytest.mark.slow
def test_bar_of_a_fallback_tick_is_orange_and_of_a_streaming_tick_green(recorded):
    trace, frames = recorded["trace"], recorded["frames"]
    fallback = trace[(trace["source"] == "fallback") & (trace["tick"] >= 6)].iloc[0]
    streaming = trace[(trace["state"] == "streaming")
                      & trace["source"].isin(["fresh", "queued"])].iloc[-1]
    assert fallback["state"] == "stalled" and 6 <= fallback["tick"] < 16  # in the partition
    stalled_bar = _bar_colour(frames[int(fallback["tick"])])
    streaming_bar = _bar_colour(frames[int(streaming["tick"])])
    # after H.264 (4:2:0) encoding: within a few levels of the drawn colour
    assert np.abs(stalled_bar - overlay.STATE_COLOURS["stalled"]).max() <= 20, stalled_bar
    assert np.abs(streaming_bar - overlay.STATE_COLOURS["streaming"]).max() <= 20, streaming_bar
    assert np.abs(stalled_bar - streaming_bar).max() >= 100


@pytest.mark.slow
def test_fault_window_is_red_on_the_timeline_only_over_its_ticks(recorded):
    frame = recorded["frames"][0].astype(int)
    timeline = frame[-2]  # the bar's bottom edge; the horizon is 200 ticks over 256 px
    in_window = timeline[round(11 * 255 / 200)]  # tick 11 of the window 6-16
    before = timeline[round(40 * 255 / 200)]  # tick 40: no window
    assert in_window[0] > 180 and in_window[1] < 110, in_window
    assert abs(before[0] - before[1]) < 30, before  # grey


@pytest.mark.slow
def test_record_none_builds_no_renderer_and_writes_no_video(tmp_path, count_renderers):
    result = api.run([*FAST, "record=none"], run_dir=tmp_path / "run")
    assert result.status == 0 and result.summary["episodes"] == 1
    assert count_renderers.built == 0
    assert not (tmp_path / "run" / "videos").exists()
    assert "video" not in _row(tmp_path / "run")


@pytest.mark.slow
def test_record_failures_keeps_a_failed_episode_only_and_resume_keeps_one_video(tmp_path):
    succeeded = tmp_path / "succeeded"
    assert api.run([*FAST, "record=failures"], run_dir=succeeded).status == 0
    assert _row(succeeded)["success"] is True
    assert _row(succeeded)["video"] == ""
    assert list((succeeded / "videos").iterdir()) == []  # the temporary file went too

    failed = tmp_path / "failed"
    short = [*FAST, "record=failures", "env.max_steps=8"]  # the oracle needs ~57 ticks
    api.run(short, run_dir=failed)
    assert _row(failed)["success"] is False and _row(failed)["video"] == f"videos/{KEY}.mp4"
    video = failed / "videos" / f"{KEY}.mp4"
    first = video.read_bytes()
    assert imageio.get_reader(video).count_frames() == 9

    stale = failed / "videos" / f".{KEY}.k1ll3d.mp4"  # what a kill inside an episode left
    stale.write_bytes(b"\0")
    api.run(short, run_dir=failed)  # resume: the episode is done, its video kept as it is
    assert sorted(p.name for p in (failed / "videos").iterdir()) == [f"{KEY}.mp4"]
    assert video.read_bytes() == first

    (failed / "episodes" / f"{KEY}.json").unlink()  # killed after its video, before its row
    api.run(short, run_dir=failed)
    assert sorted(p.name for p in (failed / "videos").iterdir()) == [f"{KEY}.mp4"]
    assert _row(failed)["video"] == f"videos/{KEY}.mp4"
    assert imageio.get_reader(video).count_frames() == 9


def test_a_run_whose_episode_raises_leaves_no_video(tmp_path):
    recorder = VideoRecorder(tmp_path, "all")
    env = make_env("mujoco_pick_place")
    env.reset(seed=0)
    result = TickResult(np.zeros(4), ActionSource.QUEUED, ClientState.STREAMING, 0)
    try:
        with pytest.raises(RuntimeError, match="the robot fell over"):
            with recorder.episode(env, key=KEY, dt=0.05, horizon_ticks=10) as video:
                video.on_tick(0, result)
                assert video.frames == 1 and len(list((tmp_path / "videos").iterdir())) == 1
                raise RuntimeError("the robot fell over")
    finally:
        env.close()
    assert list((tmp_path / "videos").iterdir()) == []
    with pytest.raises(ValueError, match=r"record='some': expected one of \['none', "):
        VideoRecorder(tmp_path, "some")


def test_record_keeps_by_mode():
    keeps = {mode: [VideoRecorder(Path("/nonexistent"), mode).keeps(s) for s in (True, False)]
             for mode in ("failures", "all")}
    assert keeps == {"failures": [False, True], "all": [True, True]}


def test_video_frame_is_a_read_and_slowed_env_forwards_it():
    env = make_env("mujoco_pick_place")
    try:
        env.reset(seed=3)
        before = env.sim_state()
        frame = env.video_frame()
        assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
        assert frame.std() > 10  # a scene, not a blank
        assert env.sim_state() == before
        slowed = SlowedEnv(env, 0.001)
        assert slowed.video_stride == 1
        assert np.array_equal(slowed.video_frame(), frame)
    finally:
        env.close()
    assert env._video_renderer is None  # released by close


@pytest.fixture
def imageio_not_installed(monkeypatch):
    """Test double for an environment without the package: `import imageio` fails."""
    hide_package(monkeypatch, "imageio")


def test_missing_imageio_is_one_line_at_startup_and_exit_status_2(imageio_not_installed,
                                                                  tmp_path, caplog):
    check_available("none")  # record=none needs no encoder
    with pytest.raises(VideoUnavailable, match=r"^record=failures: missing package 'imageio'"
                                               r".*robot-policy-harness\[video\]"):
        check_available("failures")
    _, config = api.compose([*FAST, "record=all"])
    with caplog.at_level(logging.ERROR, logger="harness.jobs.loop"):
        status = run_loop(config, tmp_path / "run", [])  # the process's exit status
    assert status == 2
    (line,) = [r.getMessage() for r in caplog.records if "imageio" in r.getMessage()]
    # The installed metadata's message (pip install -e '.[video]' (or ...)) or the fallback's.
    assert "\n" not in line and "pip install" in line and "robot-policy-harness[video]'" in line
    assert list((tmp_path / "run" / "episodes").iterdir()) == []  # no episode ran


def test_fault_spans_open_and_close_on_the_ticks_the_controller_does():
    windows = [FaultWindow("partition", 0.3, 0.8, "timed"),
               FaultWindow("server_stall", 0.15, float("inf"), "timed")]
    assert _fault_spans(windows, 0.05) == (FaultSpan("partition", 6, 16),
                                           FaultSpan("server_stall", 3, None))
    for span, window in zip(_fault_spans(windows, 0.05), windows, strict=True):
        for tick in range(40):  # active exactly where the window is, at tick x dt
            assert span.active(tick) == window.active(tick * 0.05), (span, tick)


def test_draw_frame_colours_the_bar_by_state_and_marks_open_windows():
    scene = np.full((256, 256, 3), 200, np.uint8)
    spans = (FaultSpan("partition", 20, 80),)
    inside = draw_frame(scene, FrameStatus(40, 2.0, "stalled", "fallback", spans, 200))
    outside = draw_frame(scene, FrameStatus(120, 6.0, "streaming", "queued", spans, 200))
    assert inside.shape == outside.shape == (304, 256, 3)
    assert np.array_equal(inside[:256], scene)  # the scene is never drawn over
    assert tuple(inside[257, 128]) == overlay.STATE_COLOURS["stalled"]
    assert tuple(outside[257, 128]) == overlay.STATE_COLOURS["streaming"]
    fault_text_rows = slice(256 + overlay.ROW_PX, 304 - overlay.TIMELINE_PX)
    red = np.array(overlay.FAULT_COLOUR)
    assert (inside[fault_text_rows] == red).all(-1).any()  # "partition 20-80" in red
    assert not (outside[fault_text_rows] == red).all(-1).any()  # "no fault"
    assert tuple(outside[-1, 50]) == overlay.FAULT_COLOUR  # tick 50 is in the window
    assert tuple(outside[-1, 200]) != overlay.FAULT_COLOUR  # tick ~157 is not
    assert tuple(outside[-1, round(120 * 255 / 200)]) == (255, 255, 255)  # this tick


@pytest.mark.parametrize(("shape", "size"), [
    ((256, 256, 3), (256, 256)),  # as it is
    ((128, 128, 3), (256, 256)),  # a policy's small agentview, scaled up
    ((480, 640, 3), (256, 192)),  # wider than high: aspect kept
    ((100, 256, 3), (256, 96)),  # height rounded to the encoder's 16-pixel blocks
])
def test_fit_scales_to_the_frame_width_in_whole_macro_blocks(shape, size):
    assert fit(np.zeros(shape, np.uint8)).size == size


@pytest.mark.slow
def test_libero_episode_writes_a_readable_video(tmp_path):
    pytest.importorskip("libero")
    result = api.run(["transport=local", "server=inprocess", "env=libero_object", "env.tasks=0",
                      "env.episodes_per_task=1", "env.max_steps=9", "record=all"],
                     run_dir=tmp_path / "run")
    assert result.status == 0
    row = _row(tmp_path / "run")
    assert row["video"] == f"videos/{KEY}.mp4"
    reader = imageio.get_reader(tmp_path / "run" / row["video"])
    frames = [np.asarray(frame) for frame in reader]
    assert reader.get_meta_data()["fps"] == 5.0  # its own agentview render: every 4th tick
    assert len(frames) == 4  # ticks 0, 4, 8 and the end
    assert {frame.shape for frame in frames} == {(304, 256, 3)}
    assert all(frame[:256].std() > 20 for frame in frames)  # the scene, not a blank
    assert np.abs(_bar_colour(frames[-1]) - overlay.STATE_COLOURS[row["client_state_end"]]
                  ).max() <= 20

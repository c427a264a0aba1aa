"""Episode videos (`record=failures|all`): what the robot's camera saw, under what the
client did, so a person can watch a failure instead of reading its trace.

Frames. One every `env.video_stride` ticks (`envs.base.VideoEnv`): the scene the tick
observed (before its action), with the tick's client state, action source and the
episode's fault windows drawn under it (`harness.results.overlay`), then one last frame of
the scene at the end, labelled with how the episode ended. The video plays in control
time: fps = control_hz / stride, i.e. 20 fps for the MuJoCo tasks (every tick, 256x256)
and for LIBERO when the policy sees agentview, 5 fps for LIBERO rendering its own agentview
(every 4th tick: a frame costs ~0.13 s on a CPU). A frame is 256 wide plus a 48-pixel bar.

Cost. Frames are rendered in the control loop (`FilmedEngine.tick`), like the policy's
cameras: the virtual clock makes that invisible in the results, `clock=realtime` shows it
as overruns. A run with `record=none` builds no video renderer and imports no encoder.

Encoding. H.264 MP4 by imageio through imageio-ffmpeg's own ffmpeg binary; each frame is
piped to ffmpeg as it is drawn, so no more than one frame is in memory.

Files. `<run dir>/videos/<episode key>.mp4` (`ResultsStore.key`, e.g. task000-ep0003.mp4),
written as a hidden `.<key>.<random>.mp4` and renamed when the episode ends if it is kept
(record=all, or an episode that did not succeed under record=failures), deleted if not. The
episode row's `video` is the kept file's path relative to the run directory, "" if none
(`EpisodeVideo.finish`). Resume: a finished episode's video stays; an episode re-run after
a kill overwrites its own name (or, not kept this time, removes what an earlier attempt
left), and `VideoRecorder` removes the half-written files of a kill: never two videos of
one episode. A video is renamed into place before its episode's row is written, so a row's
`video` always exists; a kill between the two leaves a video without a row, replaced when
its episode runs again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.extras import DISTRIBUTION, missing_extra_message
from harness.results.overlay import FaultSpan, FrameStatus, draw_frame

if TYPE_CHECKING:
    from envs.base import VideoEnv
    from harness import protocol
    from harness.client.engine import ClientEngine
    from harness.client.states import TickResult
    from harness.results.trace import EpisodeTrace

log = logging.getLogger(__name__)

VIDEOS = "videos"
RECORD_CHOICES = ("none", "failures", "all")
QUALITY = 7
"""imageio's 0-10 quality (libx264 crf 15): the bar's text stays sharp."""


class VideoUnavailable(ImportError):
    """record=failures|all without the `video` extra (imageio, imageio-ffmpeg, pillow)."""


def check_available(record: str) -> None:
    """Call at startup, before any episode runs: with `record` other than none, check that
    the encoder and its ffmpeg binary are there.

    Raises:
        VideoUnavailable: one line naming the missing package and the install command.
    """
    if str(record) == "none":
        return
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg
        import PIL  # noqa: F401

        imageio_ffmpeg.get_ffmpeg_exe()
    except ModuleNotFoundError as exc:
        extra = missing_extra_message(exc) or (
            f"missing package {exc.name!r}: install the 'video' extra, pip install "
            f"'{DISTRIBUTION}[video]' (or pip install -e '.[video]')")
        raise VideoUnavailable(f"record={record}: {extra}") from exc
    except RuntimeError as exc:  # imageio-ffmpeg found no binary
        raise VideoUnavailable(f"record={record}: {exc}; pip install "
                               f"'{DISTRIBUTION}[video]'") from exc


class VideoRecorder:
    """The videos of one run directory (one per job).

    Args:
        run_dir: the job's run directory; videos go to `<run_dir>/videos/`.
        record: "none", "failures" or "all" (`harness.config.Record`).

    Raises:
        ValueError: `record` is none of those.
    """

    def __init__(self, run_dir: Path, record: str) -> None:
        if str(record) not in RECORD_CHOICES:
            raise ValueError(f"record={record!r}: expected one of {list(RECORD_CHOICES)}")
        self.run_dir = Path(run_dir)
        self.record = str(record)
        if self.record != "none":
            folder = self.run_dir / VIDEOS
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.mp4"):  # left by a kill inside an episode
                stale.unlink(missing_ok=True)

    @property
    def enabled(self) -> bool:
        return self.record != "none"

    def keeps(self, success: bool) -> bool:
        """Whether an episode that ended with `success` keeps its video."""
        return self.record == "all" or (self.record == "failures" and not success)

    @contextlib.contextmanager
    def episode(self, env: VideoEnv, *, key: str, dt: float, horizon_ticks: int,
                spans: tuple[FaultSpan, ...] = ()) -> Iterator[EpisodeVideo]:
        """An episode's video, open for the block; if the block raises, the half-written
        file is removed (its episode has no row, so it will run again).

        Args:
            env: the episode's env (`VideoEnv`): what is filmed.
            key: the episode's key in the store (`ResultsStore.key`): the file's name.
            dt: seconds per control tick.
            horizon_ticks: the episode's tick limit (the timeline's width).
            spans: the episode's fault windows, in ticks.
        """
        video = EpisodeVideo(self, env, key=key, dt=dt, horizon_ticks=horizon_ticks,
                             spans=spans)
        try:
            yield video
        finally:
            video.discard()


class EpisodeVideo:
    """One episode's video while it runs: frames go to ffmpeg as the ticks pass
    (`film(engine)` returns the engine the runner drives), and `finish` keeps or drops
    the file. Not thread-safe: the robot's own thread drives it."""

    def __init__(self, recorder: VideoRecorder, env: VideoEnv, *, key: str, dt: float,
                 horizon_ticks: int, spans: tuple[FaultSpan, ...]) -> None:
        self._recorder = recorder
        self._env = env
        self.stride = max(1, int(env.video_stride))
        self.fps = 1.0 / (dt * self.stride)
        self._dt = dt
        self._horizon = horizon_ticks
        self._spans = tuple(spans)
        self.relative = f"{VIDEOS}/{key}.mp4"
        """The file's path relative to the run directory: the row's `video`."""
        self.frames = 0
        self._last: tuple[int, TickResult] | None = None
        fd, tmp = tempfile.mkstemp(dir=recorder.run_dir / VIDEOS, prefix=f".{key}.",
                                   suffix=".mp4")
        os.close(fd)
        self._tmp: Path | None = Path(tmp)
        self._writer = None

    def film(self, engine: ClientEngine) -> FilmedEngine:
        """`engine` as the runner should drive it: each tick's result also goes here."""
        return FilmedEngine(engine, self)

    def on_tick(self, tick: int, result: TickResult) -> None:
        """Called by `FilmedEngine` after the engine chose tick `tick`'s action, before the
        env steps: every `stride`-th tick, the scene it observed becomes a frame."""
        self._last = (tick, result)
        if tick % self.stride == 0:
            self._write(tick, result.state.value, result.source.value)

    def finish(self, trace: EpisodeTrace) -> str:
        """The episode ended (the env is still at its last step): add the last frame,
        close the file and keep it or not (`VideoRecorder.keeps`). Returns the row's
        `video`: the path relative to the run directory, "" if none was kept."""
        if self._last is not None:
            tick, result = self._last
            self._write(tick + 1, result.state.value, trace.termination)
        self._close_writer()
        final = self._recorder.run_dir / self.relative
        if not self._recorder.keeps(trace.success) or not self.frames:
            final.unlink(missing_ok=True)  # what an earlier, killed attempt may have left
            self.discard()
            return ""
        os.replace(self._tmp, final)
        self._tmp = None
        log.debug("%s: %d frames at %.1f fps", final, self.frames, self.fps)
        return self.relative

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there. Idempotent."""
        self._close_writer()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _write(self, tick: int, state: str, source: str) -> None:
        frame = draw_frame(np.asarray(self._env.video_frame()),
                           FrameStatus(tick, tick * self._dt, state, source, self._spans,
                                       self._horizon))
        if self._writer is None:
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(
                self._tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                quality=QUALITY, pixelformat="yuv420p", macro_block_size=16,
                ffmpeg_log_level="error")
        self._writer.append_data(frame)
        self.frames += 1

    def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


class FilmedEngine:
    """A `ClientEngine` whose every tick result is also handed to its `EpisodeVideo`:
    what the runner drives while an episode is filmed. Everything else is the engine's
    own (read through); nothing is changed, so a filmed episode executes the same actions."""

    def __init__(self, engine: ClientEngine, video: EpisodeVideo) -> None:
        self._engine = engine
        self._video = video

    def tick(self, tick: int, observation: protocol.Observation) -> TickResult:
        result = self._engine.tick(tick, observation)
        self._video.on_tick(tick, result)
        return result

    def __getattr__(self, name: str):
        """Whatever else the runner reads (`state`, `dt`, `config`, `stats`, ...)."""
        return getattr(self._engine, name)

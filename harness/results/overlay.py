"""What an episode video shows under the scene: the client's state at that tick and the
episode's fault windows, drawn with pillow so a person can read a frame without the trace.

Below the scene (never over it, so the robot stays in full view), a bar of BAR_HEIGHT_PX:

    row 1  the client state's colour (STATE_COLOURS), with the tick, its control time, the
           state and the action's source ("tick 37  1.85 s  STALLED  fallback")
    row 2  dark: the fault windows open at this tick ("partition 20-80", in red) or
           "no fault"; along its bottom edge the episode's timeline, every window a red
           span and a white mark at this tick

The colours are plain and far apart (green, yellow, orange, purple, red), so they survive
the video's lossy encoding: a fallback tick's bar reads back as orange, a streaming one as
green.

pillow is the `video` extra's: it is imported when the first frame is drawn, so the harness
imports this module (and `harness.results.video`) without it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

WIDTH_PX = 256
"""Every frame is this wide: narrower or wider scenes are scaled (keeping their aspect)."""
BAR_HEIGHT_PX = 48
ROW_PX = 22
TIMELINE_PX = 4
FONT_PX = 13
STATE_COLOURS: dict[str, tuple[int, int, int]] = {
    "connecting": (110, 110, 120),
    "streaming": (40, 170, 70),
    "degraded": (225, 200, 40),
    "stalled": (240, 130, 20),
    "reconnecting": (140, 70, 200),
    "dead": (210, 30, 30),
}
"""Client state (`harness.client.states.ClientState` values) -> the bar's colour."""
UNKNOWN_COLOUR = (90, 90, 90)
FAULT_COLOUR = (235, 60, 50)
ROW2_COLOUR = (25, 25, 30)
TEXT_ON_DARK = (235, 235, 235)
TEXT_ON_LIGHT = (10, 10, 10)


@dataclass(frozen=True)
class FaultSpan:
    """One fault window of an episode, in its ticks: active for start <= tick < end."""

    kind: str
    start_tick: int
    end_tick: int | None
    """Exclusive; None: to the end of the episode."""

    def active(self, tick: int) -> bool:
        return self.start_tick <= tick and (self.end_tick is None or tick < self.end_tick)

    def label(self) -> str:
        return f"{self.kind} {self.start_tick}-{'end' if self.end_tick is None else self.end_tick}"


@dataclass(frozen=True)
class FrameStatus:
    """What the bar of one frame says."""

    tick: int
    time_s: float
    state: str
    """The client state's value ("streaming", "stalled", ...)."""
    source: str
    """Where the tick's action came from ("fresh", "queued", "fallback", "wait"), or how
    the episode ended on its last frame ("success", "max_steps", "dead")."""
    spans: tuple[FaultSpan, ...] = ()
    horizon_ticks: int = 1
    """The episode's tick limit: the timeline's full width."""


_FONTS = threading.local()


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """pillow's own font (no font file on disk needed), loaded once per thread: a FreeType
    face is not to be shared by threads, and robots film in threads of their own."""
    font = getattr(_FONTS, "font", None)
    if font is None:
        from PIL import ImageFont

        font = _FONTS.font = ImageFont.load_default(size=FONT_PX)
    return font


def fit(scene: np.ndarray) -> Image.Image:
    """`scene` (HxWx3 uint8) as WIDTH_PX wide, its height a multiple of 16 (what the video
    encoder's macro blocks need, so it never rescales a frame itself)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(scene[..., :3]))
    height = max(16, round(image.height * WIDTH_PX / image.width / 16) * 16)
    if image.size != (WIDTH_PX, height):
        image = image.resize((WIDTH_PX, height), Image.Resampling.BILINEAR)
    return image


def draw_frame(scene: np.ndarray, status: FrameStatus) -> np.ndarray:
    """The scene with the status bar under it: (fitted height + BAR_HEIGHT_PX) x WIDTH_PX x 3
    uint8. Pure: the same inputs give the same pixels."""
    from PIL import Image, ImageDraw

    picture = fit(scene)
    frame = Image.new("RGB", (WIDTH_PX, picture.height + BAR_HEIGHT_PX), ROW2_COLOUR)
    frame.paste(picture, (0, 0))
    draw = ImageDraw.Draw(frame)
    top = picture.height
    colour = STATE_COLOURS.get(status.state, UNKNOWN_COLOUR)
    draw.rectangle((0, top, WIDTH_PX - 1, top + ROW_PX - 1), fill=colour)
    text = _text_colour(colour)
    draw.text((4, top + 4), f"tick {status.tick}  {status.time_s:.2f} s", fill=text,
              font=_font())
    draw.text((WIDTH_PX - 4, top + 4), f"{status.state.upper()} {status.source}", fill=text,
              font=_font(), anchor="ra")
    open_now = [span.label() for span in status.spans if span.active(status.tick)]
    draw.text((4, top + ROW_PX + 3), ", ".join(open_now) if open_now else "no fault",
              fill=FAULT_COLOUR if open_now else TEXT_ON_DARK, font=_font())
    _draw_timeline(draw, status, bottom=frame.height - 1)
    return np.asarray(frame)


def _draw_timeline(draw: ImageDraw.ImageDraw, status: FrameStatus, *, bottom: int) -> None:
    """The episode's windows along the bar's bottom edge, and where this tick is."""
    horizon = max(1, status.horizon_ticks)
    top = bottom - TIMELINE_PX + 1

    def x(tick: int) -> int:
        return min(WIDTH_PX - 1, round(tick * (WIDTH_PX - 1) / horizon))

    draw.rectangle((0, top, WIDTH_PX - 1, bottom), fill=(70, 70, 75))
    for span in status.spans:
        end = horizon if span.end_tick is None else min(span.end_tick, horizon)
        draw.rectangle((x(span.start_tick), top, max(x(span.start_tick), x(end) - 1), bottom),
                       fill=FAULT_COLOUR)
    cursor = x(min(status.tick, horizon))
    draw.rectangle((max(0, cursor - 1), top, min(WIDTH_PX - 1, cursor + 1), bottom),
                   fill=(255, 255, 255))


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Dark text on a light bar, light text on a dark one (by the bar's luma)."""
    r, g, b = background
    return TEXT_ON_LIGHT if 0.299 * r + 0.587 * g + 0.114 * b > 120 else TEXT_ON_DARK

"""The report's HTML tables: every config's row, one config's figures (where a one-row heat
map would say nothing), and the episodes worth opening (failures, and any with a video)
with a link to each episode's video relative to the page, so that the link still works when
the sweep directory is moved or copied with its report.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from reports.figures import FAILSAFE, FAILURES
from reports.sweep import Sweep

CONFIG_TABLE_ID = "table-configs"
EPISODE_TABLE_ID = "table-episodes"
SUCCESS_TABLE_ID = "table-success"
FAILSAFE_TABLE_ID = "table-failsafe"


def _table(frame: pd.DataFrame, table_id: str, *, escape: bool = True) -> str:
    table = frame.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}",
                          border=0, escape=escape)
    return f'<div id="{table_id}" class="table-wrap">{table}</div>'


def config_table(sweep: Sweep) -> str:
    """Every config's row of `Sweep.configs`, every column."""
    return _table(sweep.configs.reset_index(), CONFIG_TABLE_ID)


def success_table(sweep: Sweep) -> str:
    """Success of each config with episodes as a table (label, successes/episodes, rate
    and its Wilson 95% interval): the success matrix of a one-config report."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    frame = pd.DataFrame({
        "config": configs["label"],
        "successes/episodes": [f"{s}/{n}" for s, n in zip(configs["successes"],
                                                           configs["episodes"], strict=True)],
        "success rate": [f"{r:.0%}" for r in configs["success_rate"]],
        "Wilson 95%": [f"{lo:.0%}-{hi:.0%}" for lo, hi in zip(
            configs["wilson95_low"], configs["wilson95_high"], strict=True)]})
    return _table(frame, SUCCESS_TABLE_ID)


def failsafe_table(sweep: Sweep) -> str:
    """The fail-safe figures of each config with episodes, one row per figure: the
    heat map of a one-config report. A failure (`figures.FAILURES`) above zero is marked."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    rows = []
    for column, title in FAILSAFE.items():
        cells = []
        for value in configs.reindex(columns=[column])[column].astype(float):
            shown = "-" if math.isnan(value) else f"{value:.3g}"
            failed = column in FAILURES and value > 0
            cells.append(f'<td class="failure">{shown}</td>' if failed else f"<td>{shown}</td>")
        rows.append(f"<tr><th>{html.escape(title)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(label)}</th>" for label in configs["label"])
    return (f'<div id="{FAILSAFE_TABLE_ID}" class="table-wrap"><table><thead><tr><th>figure'
            f"</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def video_href(sweep: Sweep, job_dir: str, video: object, page_dir: Path) -> str | None:
    """The link from a page in `page_dir` to an episode's video: `video` is relative to the
    episode's job directory (`job_dir`, relative to the sweep's root). A relative URL, so it
    names no directory of this machine; None where the row names no video (absent, empty)
    or the file is not there."""
    if not isinstance(video, str) or not video.strip():
        return None
    target = sweep.root / job_dir / video
    if not target.is_file():
        return None
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    return quote(Path(relative).as_posix())


def episode_table(sweep: Sweep, page_dir: Path) -> str:
    """The episodes that failed and those with a video (`record=failures|all`), one row
    each: config, task, episode, how it ended, blind time, breaches, and its video linked
    (`video_href`); a video the row names but that is not on disk says so. One line if there
    is none."""
    episodes = sweep.episodes
    videos = episodes.get("video", pd.Series(None, index=episodes.index, dtype=object))
    named = videos.map(lambda v: isinstance(v, str) and bool(v.strip()))
    failed = ~episodes["success"].fillna(False).astype(bool)
    shown = episodes[failed | named]
    if shown.empty:
        return f'<p id="{EPISODE_TABLE_ID}">Every episode succeeded; none has a video.</p>'
    rows = []
    for index, row in shown.iterrows():
        href = video_href(sweep, row["job_dir"], videos[index], page_dir)
        if href is not None:
            link = f'<a href="{html.escape(href)}">{html.escape(videos[index])}</a>'
        elif named[index]:
            link = f"{html.escape(videos[index])} (not found)"
        else:
            link = "-"
        termination = row.get("termination")
        ended = termination if isinstance(termination, str) \
            else "failed" if failed[index] else "success"
        cells = [sweep.configs.at[row["config"], "label"], row["task"], row["episode"], ended,
                 row.get("blind_s"), row.get("breaches")]
        text = ["-" if isinstance(c, float) and math.isnan(c)
                else f"{c:.3g}" if isinstance(c, float) else html.escape(str(c)) for c in cells]
        rows.append("<tr>" + "".join(f"<td>{t}</td>" for t in [*text, link]) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("config", "task", "episode", "ended", "blind s",
                                             "breaches", "video"))
    return (f'<div id="{EPISODE_TABLE_ID}" class="table-wrap episodes"><table><thead><tr>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")

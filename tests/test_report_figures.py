"""What a newcomer reads in `report.html`: one colour per transport in every figure, no plot
that says nothing (success against delay without a swept delay, one-row heat maps), colours
that alarm only on failures, labels as the overrides were typed, a timeline that opens on
the config with the most fault events, episode videos linked relative to the page, and no
directory of the machine the report was built on.

Small real runs (`tests.test_reports.harness_sweep`): a zmq/grpc sweep over `faults=none,
wan_50ms` (two transports, two delays), and two single runs side by side ("mixed": one with
`faults=partition_3s env.episodes_per_task=2`, one that never says `faults=` nor
`env.episodes_per_task=`: a faults-only pair with no delay).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import plotly.graph_objects as go
import pytest

from reports import colours, load_sweep
from reports import overrides as ov
from reports.__main__ import main
from reports.figures import (
    FAILSAFE,
    MIN_PLOT_PX,
    delay_swept,
    failsafe_heatmap,
    latency_cdf,
    success_matrix,
    success_vs_delay,
)
from reports.html import render_report, write_report
from reports.timeline import MENU_TOP_PX, STATE_COLOURS, fault_event_counts, timeline
from tests.test_reports import DELAY_SWEEP, LOCAL, harness_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|root|home|Users|var|private)/[^\s\"'<>]*")
"""An absolute directory of a Linux or macOS machine, as a page would name one."""
VIDEO = "videos/task000-ep0001.mp4"


@pytest.fixture(scope="module")
def two_transports(tmp_path_factory) -> Path:
    """zmq and grpc x faults none (0 ms) and wan_50ms (25 ms each way), one episode each."""
    return harness_sweep(tmp_path_factory, "two-transports",
                         "transport=zmq,grpc", "faults=none,wan_50ms",
                         "env.episodes_per_task=1")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Two single runs in one folder: `faulty/` (partition_3s, 2 episodes) and `plain/`
    (client=async_newest, the default, given; faults and episodes_per_task left default)."""
    harness_sweep(tmp_path_factory, "mixed/faulty", *LOCAL, "faults=partition_3s",
                  "env.episodes_per_task=2", multirun=False)
    return harness_sweep(tmp_path_factory, "mixed/plain", *LOCAL, "client=async_newest",
                         multirun=False).parent


@pytest.fixture(scope="module")
def delay_sweep(tmp_path_factory) -> Path:
    return harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(c) for c in re.findall(r"\d+", colour))


def _rgb_hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _cell_colour(figure: go.Figure, row: str, column: str) -> str:
    """The colour the fail-safe heat map paints the cell (`row` label, `column` title)."""
    (heatmap,) = figure.data
    z = heatmap.z[list(heatmap.y).index(row)][list(heatmap.x).index(column)]
    return colours.colour_at(heatmap.colorscale, z)


def _series_colours(figure: go.Figure) -> dict[str, set[str]]:
    """Per legend group (success vs delay: the series; CDF: the series colour's value):
    every line and marker colour its traces draw with."""
    found: dict[str, set[str]] = {}
    for trace in figure.data:
        if trace.legendgroup and trace.legendgroup != "budget" and trace.fill != "toself":
            found.setdefault(trace.legendgroup, set()).add(
                trace.marker.color if trace.mode and "markers" in trace.mode
                else trace.line.color)
    return found


def _plot_ids(page: str) -> list[str]:
    return re.findall(r'<div id="(plot-[\w-]+)"', page)


def _machine_paths(page: str, *dirs: Path) -> list[str]:
    """Directories of this machine the page names: any of `dirs`, or anything shaped like
    an absolute path outside the inline plotly.js bundle."""
    markup = re.sub(r"<script[^>]*>\s*/\*\*\s*\* plotly\.js.*?</script>", "", page,
                    flags=re.S)
    return [str(d) for d in dirs if str(d) in page] + MACHINE_PATH.findall(markup)


def test_series_colours_are_fixed_by_the_registry_not_by_what_a_sweep_holds():
    from transports import transport_names

    zmq = colours.SERIES[list(transport_names()).index("zmq")]
    assert colours.transport_colours(["zmq", "grpc"])["zmq"] == zmq
    assert colours.transport_colours(["zenoh", "zmq", "local", "grpc"])["zmq"] == zmq
    assert colours.client_mode_colours(["synchronous"])["synchronous"] \
        == colours.client_mode_colours(["delay_aware", "synchronous"])["synchronous"] \
        == colours.SERIES[1]  # ClientMode's second member
    # a value no registry knows: the colours after the registry's, in sorted order
    plugin = colours.transport_colours(["zmq", "my.pkg:B", "my.pkg:A"])
    assert plugin["my.pkg:A"] == colours.SERIES[len(transport_names())]
    assert plugin["my.pkg:B"] == colours.SERIES[len(transport_names()) + 1]
    assert "#D62728" not in colours.SERIES  # red means failure
    assert colours.shade("#1F77B4", 0, 3) == "#1F77B4"
    # 45% of the way to white: 0x1f + (255 - 0x1f) * 0.45 = 131.8 -> 132 = 0x84, and so on
    assert colours.shade("#1F77B4", 2, 3) == "#84b4d6"


def test_a_transport_is_one_colour_in_every_figure(two_transports):
    sweep = load_sweep(two_transports)
    expected = colours.transport_colours(["zmq", "grpc"])
    by_series = _series_colours(success_vs_delay(sweep))
    assert by_series == {"zmq": {expected["zmq"]}, "grpc": {expected["grpc"]}}
    cdf = latency_cdf(sweep)
    by_group = _series_colours(cdf)
    assert set(by_group) == {"zmq", "grpc"}
    for kind, drawn in by_group.items():  # the first config its colour, the next its shade
        assert drawn == {expected[kind], colours.shade(expected[kind], 1, 2)}
    titles = [t.legendgrouptitle.text for t in cdf.data if t.legendgrouptitle.text]
    assert titles == ["transport zmq", "transport grpc"]
    # the check sees a figure that colours by position instead
    (first, *_) = [t for t in cdf.data if t.legendgroup == "zmq"]
    first.line.color = expected["grpc"]
    assert _series_colours(cdf)["zmq"] != by_group["zmq"]


def test_colours_follow_the_client_mode_where_the_transport_is_one(delay_sweep):
    sweep = load_sweep(delay_sweep)
    expected = colours.client_mode_colours(["asynchronous", "synchronous"])
    delay = {name.split()[-1]: drawn
             for name, drawn in _series_colours(success_vs_delay(sweep)).items()}
    assert delay == {"client=async_newest": {expected["asynchronous"]},
                     "client=synchronous": {expected["synchronous"]}}
    assert _series_colours(latency_cdf(sweep)) == {  # two delays per client mode
        kind: {colour, colours.shade(colour, 1, 2)} for kind, colour in expected.items()}


def test_success_vs_delay_is_drawn_only_where_a_delay_is_swept(mixed, delay_sweep,
                                                                two_transports):
    faults_only = load_sweep(mixed)
    assert faults_only.configs["injected_delay_s"].tolist() == [0.0, 0.0]
    assert len(faults_only.configs) == 2 and not delay_swept(faults_only)
    page = render_report(faults_only)
    assert "plot-success-vs-delay" not in _plot_ids(page)
    assert "No success-vs-delay plot: every config injects the same one-way delay (0 ms)" \
        in page
    for swept in (delay_sweep, two_transports):  # a swept delay_s; presets of 0 and 25 ms
        sweep = load_sweep(swept)
        assert delay_swept(sweep)
        assert _plot_ids(render_report(sweep)) == [
            "plot-success-matrix", "plot-success-vs-delay", "plot-latency-cdf",
            "plot-timeline", "plot-failsafe"]


def test_a_one_config_report_has_tables_where_heat_maps_would_be_one_row(mixed, tmp_path):
    job = Path(shutil.copytree(mixed / "faulty", tmp_path / "faulty"))
    assert main([str(job)]) == 0
    page = (job / "report" / "report.html").read_text(encoding="utf-8")
    assert _plot_ids(page) == ["plot-latency-cdf", "plot-timeline"]
    assert 'id="table-success"' in page and 'id="table-failsafe"' in page
    sweep = load_sweep(job)
    assert not timeline(sweep).layout.updatemenus  # nothing to choose from
    for heat_map in (success_matrix(sweep), failsafe_heatmap(sweep)):  # drawn anyway: 1 row
        margin = heat_map.layout.margin
        assert heat_map.layout.height - margin.t - margin.b >= MIN_PLOT_PX == 140


def test_the_heat_map_paints_zero_white_a_harmless_figure_blue_and_failures_red(mixed):
    sweep = load_sweep(mixed)
    faulty, plain = (sweep.configs.loc[sweep.configs["faults"] == name, "label"].item()
                     for name in ("partition_3s", "none"))
    figure = failsafe_heatmap(sweep)
    blind = sweep.configs.set_index("label").loc[faulty, "blind_s"]
    assert blind > 0 and sweep.configs["dead_episodes"].eq(0).all()
    assert _cell_colour(figure, plain, "dead episodes") == "rgb(255, 255, 255)"  # zero
    assert _cell_colour(figure, plain, "stale actions") == "rgb(255, 255, 255)"
    red, green, blue = _rgb(_cell_colour(figure, faulty, "blind s"))  # the column's max
    assert blue > red + 100 and (red, green, blue) == _rgb(colours.colour_at(
        colours.HEAT_SCALE, colours.NEUTRAL_Z[1]))
    dead = sweep.configs.assign(dead_episodes=(sweep.configs["label"] == faulty).astype(int))
    figure = failsafe_heatmap(dataclasses.replace(sweep, configs=dead))
    red, green, blue = _rgb(_cell_colour(figure, faulty, "dead episodes"))
    assert red > blue + 100 and red > green + 100  # one DEAD episode: plainly red
    assert _cell_colour(figure, plain, "dead episodes") == "rgb(255, 255, 255)"
    (heatmap,) = figure.data
    no_value = list(heatmap.x).index(FAILSAFE["time_to_detect_s_p50"])
    assert heatmap.text[list(heatmap.y).index(plain)][no_value] == "–"  # no fault window


def test_labels_are_the_overrides_as_typed(mixed):
    sweep = load_sweep(mixed)
    per_task = json.loads((mixed / "plain" / "config.json").read_text())["env"][
        "episodes_per_task"]
    assert sweep.swept_keys == ["faults", "env.episodes_per_task"]  # not client: one value
    assert sorted(sweep.configs["label"]) == [
        "faults=none env.episodes_per_task=" + str(per_task),
        "faults=partition_3s env.episodes_per_task=2"]
    rows = list(success_matrix(sweep).data[0].y)
    assert sorted(rows) == sorted(sweep.configs["label"])
    assert sorted(sweep.configs["env.episodes_per_task"].tolist()) == [2, per_task]
    page = render_report(sweep)
    assert not re.search(r"=nan\b|episodes_per_task=\d+\.0\b", page)


@pytest.mark.parametrize("lines, typed", [
    (["faults.timed.0.delay_s=0.10"], {"faults.timed.0.delay_s": "0.10"}),  # not 0.1
    (["env.tasks='0,3'"], {"env.tasks": "'0,3'"}),                  # quotes kept
    (["+experiment=fault_matrix"], {"experiment": "fault_matrix"}),  # keyed as `parse` keys
    (["~client.fallback"], {"client.fallback": ov.DELETED}),
])
def test_override_texts_are_as_typed(lines, typed):
    assert ov.texts(lines) == typed


@pytest.mark.parametrize("value, text", [
    (10, "10"), (0.1, "0.1"), (True, "true"), (None, "null"), ([1, 2], "[1,2]"),
    ("none", "none")])
def test_a_default_value_is_written_as_an_override_would(value, text):
    assert ov.value_text(value) == text


def test_the_timeline_opens_on_the_config_with_most_fault_events(mixed):
    sweep = load_sweep(mixed)
    counts = fault_event_counts(sweep.events)
    first, second = sweep.configs.index
    assert counts.get(first, 0) == 0 and counts[second] > 0  # the first: nothing to see
    figure = timeline(sweep)
    (menu,) = figure.layout.updatemenus
    assert menu.active == 1 and menu.buttons[1].label == sweep.configs.at[second, "label"]
    shown = [trace.visible for trace in figure.data]
    assert shown == menu.buttons[1].args[0]["visible"] and any(shown)
    assert figure.layout.shapes  # the partition windows drawn
    # the menu sits under the title (top 40 px), above the plot
    margin, height = figure.layout.margin, figure.layout.height
    plot_px = height - margin.t - margin.b
    menu_top_px = margin.t - (menu.y - 1) * plot_px
    assert menu.yanchor == "top" and menu_top_px == pytest.approx(MENU_TOP_PX)
    assert 40 <= menu_top_px and menu_top_px + 30 <= margin.t


def test_the_timeline_draws_each_state_in_the_colour_its_videos_use(mixed):
    from harness.client.states import ClientState
    from harness.results.overlay import STATE_COLOURS as VIDEO

    assert {state: _rgb_hex(STATE_COLOURS[state]) for state in STATE_COLOURS} == VIDEO
    assert set(STATE_COLOURS) == {state.value for state in ClientState}
    drawn = {trace.name: trace.marker.color for trace in timeline(load_sweep(mixed)).data}
    assert drawn["streaming"] == STATE_COLOURS["streaming"] and "stalled" in drawn
    assert drawn == {name: STATE_COLOURS[name] for name in drawn}


def test_on_a_tie_of_fault_events_the_timeline_opens_on_more_failures(mixed):
    """No fault event anywhere (events dropped): the config with failed episodes wins, and
    with none failed either, the first."""
    sweep = load_sweep(mixed)
    all_succeeded = sweep.configs.assign(successes=sweep.configs["episodes"])
    quiet = dataclasses.replace(sweep, events=sweep.events.iloc[0:0], configs=all_succeeded)
    assert timeline(quiet).layout.updatemenus[0].active == 0
    for failing in (0, 1):
        successes = all_succeeded["successes"].copy()
        successes.iloc[failing] -= 1
        failed = dataclasses.replace(quiet, configs=all_succeeded.assign(successes=successes))
        assert timeline(failed).layout.updatemenus[0].active == failing


def _with_videos(mixed: Path, tmp_path: Path) -> Path:
    """A copy of the mixed pair whose faulty run's episode 1 names a video on disk (a
    placeholder file), episode 2 an empty one; the plain run names none."""
    copy = Path(shutil.copytree(mixed, tmp_path / "sweep"))
    job = copy / "faulty"
    (job / "videos").mkdir()
    (job / VIDEO).write_bytes(b"\x00\x00\x00\x18ftypmp42")
    for name, video in (("task000-ep0001.json", VIDEO), ("task000-ep0002.json", "")):
        row = json.loads((job / "episodes" / name).read_text())
        (job / "episodes" / name).write_text(json.dumps({**row, "video": video}))
    return copy


def _video_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    table = text[text.index('id="table-episodes"'):]
    return re.findall(r'<a href="([^"]+)"', table[:table.index("</section>")])


def test_episode_videos_are_linked_relative_to_the_page(mixed, tmp_path):
    sweep_dir = _with_videos(mixed, tmp_path)
    page = write_report(load_sweep(sweep_dir), sweep_dir / "report.html")
    assert _video_links(page) == ["faulty/videos/task000-ep0001.mp4"]
    assert main([str(sweep_dir / "faulty")]) == 0  # a job's own report, in its report/
    assert _video_links(sweep_dir / "faulty" / "report" / "report.html") == [
        "../videos/task000-ep0001.mp4"]
    moved = Path(shutil.move(sweep_dir, tmp_path / "elsewhere" / "renamed"))
    for report in (moved / "report.html", moved / "faulty" / "report" / "report.html"):
        (href,) = _video_links(report)
        assert (report.parent / unquote(href)).read_bytes().startswith(b"\x00\x00")


def test_a_video_that_is_not_there_is_said_and_no_video_is_no_link(mixed, tmp_path):
    sweep_dir = _with_videos(mixed, tmp_path)
    (sweep_dir / "faulty" / VIDEO).unlink()
    page = write_report(load_sweep(sweep_dir), sweep_dir / "report.html")
    assert _video_links(page) == []
    assert f"{VIDEO} (not found)" in page.read_text(encoding="utf-8")
    plain = write_report(load_sweep(mixed), tmp_path / "plain" / "report.html")
    assert _video_links(plain) == []  # no row names a video: nothing linked


def test_the_report_names_no_directory_of_the_machine(mixed, tmp_path):
    sweep_dir = _with_videos(mixed, tmp_path)
    page = write_report(load_sweep(sweep_dir), sweep_dir / "report.html").read_text(
        encoding="utf-8")
    assert _machine_paths(page, sweep_dir, tmp_path) == []
    assert "in sweep" in page  # the sweep named by its folder's name
    leaked = page.replace("<h1>", f"<h1>{sweep_dir / 'faulty'}", 1)
    assert str(sweep_dir) in _machine_paths(leaked, sweep_dir)
    for path in ("/tmp/rep_sweep", "/work/sweeps13/fault_matrix", "/root/x", "/home/u/r"):
        assert _machine_paths(page.replace("<h1>", f"<h1>from {path} ", 1)) == [path]


@pytest.mark.parametrize("example", ["fault_matrix", "client_settings"])
def test_the_committed_example_reports_name_no_directory_of_the_machine(example):
    page = (ROOT / "docs" / example / "report.html").read_text(encoding="utf-8")
    assert _machine_paths(page) == []

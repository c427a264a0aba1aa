"""`report.html` opens offline and draws every plot: checked on the file itself (one inline
plotly.js, no URL the page would load) and in headless Chromium (the DOM after plotly ran,
and a screenshot that is not blank). Each checker is also shown to fail on a page broken on
purpose, so a green run means the checks looked.

The Chromium tests skip only where `chromium` is not on PATH (the project's setup installs
it: `apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports import load_sweep
from reports.__main__ import main
from reports.html import PLOT_IDS, TABLE_ID, write_report
from reports.timeline import STATE_COLOURS, timeline
from tests.test_reports import DELAY_SWEEP, harness_sweep

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH "
                                    "(apt-get install -y chromium)")
PLOTLY_BUNDLE = re.compile(r"^\s*/\*\*\s*\* plotly\.js v\d")
"""How the inline plotly.js bundle starts (its licence header)."""
URL = re.compile(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.IGNORECASE)
PLOT_BACKGROUND = (229, 236, 246)
"""plotly's default plot area colour (#E5ECF6): on the screen only where a plot was drawn."""
STREAMING_GREEN = tuple(int(STATE_COLOURS["streaming"][i:i + 2], 16) for i in (1, 3, 5))
"""The timeline's STREAMING colour (`timeline.STATE_COLOURS`), as RGB."""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    sweep = harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)
    return write_report(load_sweep(sweep), tmp_path_factory.mktemp("report") / "report.html")


class _Page(HTMLParser):
    """Elements by id (with their classes and their descendants' classes), external
    references in attributes and styles, and the text of every inline script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, str | None]] = []
        self.ids: dict[str, dict] = {}
        self.references: list[str] = []
        self.scripts: list[str] = []
        self.text_urls: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        for name, value in attrs:
            if value and name in ("src", "href", "srcset", "action", "data", "poster") \
                    and URL.match(value.strip()):
                self.references.append(f"<{tag} {name}={value!r}>")
        for _, element in self.open:
            if element is not None:
                self.ids[element]["inside"] |= classes
                self.ids[element]["tags"].add(tag)
        if "id" in attributes:
            self.ids[attributes["id"]] = {"tag": tag, "classes": classes, "inside": set(),
                                          "tags": set()}
        if tag not in VOID:
            self.open.append((tag, attributes.get("id")))
        self._in = tag if tag in ("script", "style") else None
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "style":
            self.references += [f"style url({u})" for u in re.findall(
                r"url\(\s*['\"]?([^)'\"]+)", data) if URL.match(u)]
            self.references += [f"style @import {u}" for u in re.findall(
                r"@import\s+['\"]?([^\s;'\"]+)", data)]
        else:
            self.text_urls += URL.findall(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def offline_problems(text: str) -> list[str]:
    """Why the page would not open offline: an attribute or style loading a URL, plotly.js
    not inline exactly once, a URL in an inline script other than the plotly.js bundle (whose
    URLs are text: map tiles and geo data for trace types the report never draws, the
    Chart Studio link it hides), or one in the page's text."""
    page = _parse(text)
    problems = [f"loads {reference}" for reference in page.references]
    bundles = [s for s in page.scripts if PLOTLY_BUNDLE.match(s)]
    if len(bundles) != 1:
        problems.append(f"plotly.js inline {len(bundles)} times, not once")
    problems += [f"URL {url} in an inline script" for script in page.scripts
                 if not PLOTLY_BUNDLE.match(script) for url in URL.findall(script)]
    problems += [f"URL {url} in the page's text" for url in page.text_urls]
    return problems


def dom_problems(dom: str, configs: int, plot_ids: tuple[str, ...] = PLOT_IDS) -> list[str]:
    """Why the DOM after plotly ran lacks a plot: one of `plot_ids` absent, not made a
    plotly plot, or without a drawn SVG; the config table absent or not one row per config."""
    page, problems = _parse(dom), []
    for plot_id in plot_ids:
        element = page.ids.get(plot_id)
        if element is None:
            problems.append(f"#{plot_id} is absent")
        elif "js-plotly-plot" not in element["classes"] or "main-svg" not in element["inside"]:
            problems.append(f"#{plot_id} was not drawn (no .js-plotly-plot with a .main-svg)")
    table = page.ids.get(TABLE_ID)
    if table is None or "table" not in table["tags"]:
        problems.append(f"#{TABLE_ID} has no table")
    else:
        body = dom[dom.index(f'id="{TABLE_ID}"'):]
        body = body[body.index("<tbody>"):body.index("</tbody>")]
        if body.count("<tr") != configs:
            problems.append(f"#{TABLE_ID} has {body.count('<tr')} rows, not {configs}")
    return problems


def screenshot_problems(png: Path) -> list[str]:
    """Why a screenshot shows no report: (nearly) one colour, few colours, no plot area, no
    STREAMING segment of the timeline."""
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    problems = []
    if pixels.std() < 10:
        problems.append(f"blank: pixel std {pixels.std():.1f}")
    packed = (pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8) \
        | pixels[:, 2]  # one integer per colour: np.unique(axis=0) sorted rows for 4 s
    colours = len(np.unique(packed))
    if colours < 64:
        problems.append(f"only {colours} distinct colours")
    for name, colour, share in (("plot area", PLOT_BACKGROUND, 0.02),
                                ("STREAMING segment", STREAMING_GREEN, 0.0005)):
        found = (pixels == colour).all(axis=1).mean()
        if found < share:
            problems.append(f"no {name} ({found:.2%} of pixels in {colour})")
    return problems


def chromium(page: Path, *args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium on `page`, no network at all (every host resolves to nothing)."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=5000", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)


def dump_dom(page: Path, tmp_path: Path) -> str:
    return chromium(page, "--dump-dom", profile=tmp_path / "profile").stdout


def screenshot(page: Path, tmp_path: Path) -> Path:
    png = tmp_path / f"{page.stem}.png"
    chromium(page, f"--screenshot={png}", "--window-size=1280,2000",
             profile=tmp_path / "profile")
    return png


def broken(report: Path, tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = report.read_text(encoding="utf-8")
    assert old in text
    page = tmp_path / f"{name}.html"
    page.write_text(text.replace(old, new, 1), encoding="utf-8")
    return page


def test_the_report_is_one_file_that_loads_nothing(report):
    text = report.read_text(encoding="utf-8")
    assert offline_problems(text) == []
    assert all(f'id="{plot_id}"' in text for plot_id in (*PLOT_IDS, TABLE_ID))
    assert "@font-face" not in text


def test_the_offline_check_catches_what_would_load(report):
    text = report.read_text(encoding="utf-8")
    cdn = text.replace("<head>", '<head><script src="https://cdn.plot.ly/plotly.js"></script>')
    font = text.replace("</style>", "@import 'https://fonts.example.org/a.css';</style>")
    twice = text.replace("</body>", f"<script>{text.split('<script', 2)[1].split('>', 1)[1]}")
    assert any("loads <script src=" in p for p in offline_problems(cdn))
    assert any("@import" in p for p in offline_problems(font))
    assert any("inline 2 times" in p for p in offline_problems(twice))
    assert any("page's text" in p for p in offline_problems(
        text.replace("<h1>", "<h1>see https://example.org ")))


def test_a_30_config_report_stays_small(tmp_path_factory, tmp_path):
    """30 configs (copies of one real job, each with its own overrides), 3 episodes drawn
    per config: the page is plotly.js plus a little."""
    sweep_dir = harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)
    (job, *_) = sorted(sweep_dir.glob("*/config.json"))
    for i in range(30):
        copy = Path(shutil.copytree(job.parent, tmp_path / "big" / f"job{i}"))
        overrides = json.loads((copy / "overrides.json").read_text())
        (copy / "overrides.json").write_text(json.dumps([*overrides, f"seed={i}"]))
    sweep = load_sweep(tmp_path / "big")
    assert len(sweep.configs) == 30
    menu = timeline(sweep, per_config=3).layout.updatemenus[0]
    assert len(menu.buttons) == 30
    page = write_report(sweep, tmp_path / "report.html")
    assert page.stat().st_size < 15e6
    assert offline_problems(page.read_text(encoding="utf-8")) == []


@needs_chromium
def test_every_plot_is_drawn_in_headless_chromium(report, tmp_path):
    assert dom_problems(dump_dom(report, tmp_path), configs=4) == []


@needs_chromium
def test_the_dom_check_catches_a_missing_or_undrawn_plot(report, tmp_path):
    no_cdf = dump_dom(broken(report, tmp_path, "no-cdf", 'id="plot-latency-cdf"',
                             'id="plot-renamed"'), tmp_path)
    assert dom_problems(no_cdf, configs=4) == ["#plot-latency-cdf is absent"]
    assert dom_problems(no_cdf, configs=5) == ["#plot-latency-cdf is absent",
                                               f"#{TABLE_ID} has 4 rows, not 5"]
    no_plotly = broken(report, tmp_path, "no-plotly", "/**\n* plotly.js v",
                       "throw 'plotly.js did not load'; /**\n* plotly.js v")
    problems = dom_problems(dump_dom(no_plotly, tmp_path), configs=4)
    assert problems == [f"#{plot_id} was not drawn (no .js-plotly-plot with a .main-svg)"
                        for plot_id in PLOT_IDS]


@needs_chromium
def test_the_screenshot_is_not_blank(report, tmp_path):
    assert screenshot_problems(screenshot(report, tmp_path)) == []


@needs_chromium
def test_a_one_job_report_draws_its_plots_and_tables_in_headless_chromium(tmp_path_factory,
                                                                           tmp_path):
    """One config: the latency CDF and the timeline drawn, success and fail-safe figures as
    tables (one-row heat maps say nothing), no success-vs-delay plot (one delay)."""
    sweep_dir = harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)
    (job, *_) = sorted(sweep_dir.glob("*/config.json"))
    job = Path(shutil.copytree(job.parent, tmp_path / "job"))
    assert main([str(job)]) == 0
    page = job / "report" / "report.html"
    dom = dump_dom(page, tmp_path)
    assert dom_problems(dom, configs=1, plot_ids=("plot-latency-cdf", "plot-timeline")) == []
    assert dom_problems(dom, configs=1) == [  # the others are not on the page at all
        "#plot-success-matrix is absent", "#plot-success-vs-delay is absent",
        "#plot-failsafe is absent"]
    assert all(table in _parse(dom).ids for table in ("table-success", "table-failsafe"))
    assert screenshot_problems(screenshot(page, tmp_path)) == []


@needs_chromium
def test_the_screenshot_check_catches_a_page_without_plots(report, tmp_path):
    no_plotly = broken(report, tmp_path, "no-plotly", "/**\n* plotly.js v",
                       "throw 'plotly.js did not load'; /**\n* plotly.js v")
    problems = screenshot_problems(screenshot(no_plotly, tmp_path))
    assert any(p.startswith("no plot area") for p in problems)
    white = tmp_path / "white.png"
    Image.new("RGB", (1280, 2000), "white").save(white)
    assert screenshot_problems(white)[:2] == ["blank: pixel std 0.0", "only 1 distinct colours"]


def test_a_partial_sweep_says_what_is_missing(tmp_path_factory, tmp_path):
    sweep_dir = harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)
    copy = Path(shutil.copytree(sweep_dir, tmp_path / "sweep"))
    (episode, *_) = sorted(copy.glob("*/episodes/task000-ep0002.json"))
    episode.unlink()
    text = write_report(load_sweep(copy), tmp_path / "report.html").read_text(encoding="utf-8")
    missing = text[text.index('<section id="missing"'):]
    assert "1 episode(s) missing (task/episode: 0/2)" in missing[:missing.index("</section>")]
    assert '<section id="missing"' not in write_report(
        load_sweep(sweep_dir), tmp_path / "whole.html").read_text(encoding="utf-8")


def test_a_sweep_without_episodes_still_renders_every_section(tmp_path_factory, tmp_path):
    """Every section but success against delay (no delay swept: no episode injects one)."""
    sweep_dir = harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)
    (job, *_) = sorted(sweep_dir.glob("*/config.json"))
    shutil.copytree(job.parent / ".hydra", tmp_path / "sweep" / "job" / ".hydra")
    text = write_report(load_sweep(tmp_path / "sweep"), tmp_path / "report.html").read_text(
        encoding="utf-8")
    drawn = [p for p in PLOT_IDS if p != "plot-success-vs-delay"]
    assert all(f'id="{plot_id}"' in text for plot_id in (*drawn, TABLE_ID))
    assert 'id="plot-success-vs-delay"' not in text
    assert text.count('"text":"no episodes"') == 3 and '"text":"no round trips"' in text
    assert offline_problems(text) == []


def test_the_success_matrix_shows_each_configs_count_and_interval(tmp_path_factory):
    from reports.figures import success_matrix

    sweep = load_sweep(harness_sweep(tmp_path_factory, "delay-sweep",
                                     *DELAY_SWEEP))
    (heatmap,) = success_matrix(sweep).data
    assert list(heatmap.x) == ["local"]  # the transport: a column; the rest: a row each
    expected = {f"{c['label']}": c for _, c in sweep.configs.iterrows()}
    assert sorted(heatmap.y) == sorted(expected) == [  # the overrides as typed: 0, not 0.0
        "faults.timed.0.delay_s=0 client=async_newest",
        "faults.timed.0.delay_s=0 client=synchronous",
        "faults.timed.0.delay_s=0.1 client=async_newest",
        "faults.timed.0.delay_s=0.1 client=synchronous"]
    for row, z, text in zip(heatmap.y, heatmap.z, heatmap.text, strict=True):
        config = expected[row]
        assert z[0] == config["success_rate"]
        assert text[0] == (f"{config['successes']}/{config['episodes']}<br>"
                           f"{config['wilson95_low']:.0%}-{config['wilson95_high']:.0%}")

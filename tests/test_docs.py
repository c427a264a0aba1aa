"""The documentation: README.md fits a screen and points nowhere outside the repository; the
MkDocs site (mkdocs.yml, docs/) builds with --strict, so a broken link or anchor fails here;
its choice lists are the registries' own (docs/hooks/choices.py), and a registry that does not
import stops the build instead of leaving a list out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|root|home)/|\.\./shared")
"""An absolute path of some machine, or the shared folder beside the checkout."""
README_MAX_LINES = 260
LINE_MAX_CHARS = 100


def mkdocs_build(config: Path, site: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of `config` into `site`, with the test's own interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", **(env or {})})


def docs_copy(tmp_path: Path) -> Path:
    """mkdocs.yml and docs/ copied into `tmp_path`; returns the copy's mkdocs.yml."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(REPO / "docs", tmp_path / "docs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "mkdocs.yml"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = mkdocs_build(REPO / "mkdocs.yml", site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return site


def test_the_site_builds_strictly_with_every_page_in_the_nav(site):
    pages = {p.relative_to(REPO / "docs").with_suffix("").as_posix()
             for p in (REPO / "docs").rglob("*.md")}
    built = {p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")}
    assert pages - {"index"} <= built, pages - built


def test_the_choices_page_lists_every_registered_choice(site):
    import envs
    import policies.registry
    import transports
    from harness.config import group_options
    from harness.faults.kinds import kind_names
    from policies.remote.protocols import protocol_names

    html = (site / "choices" / "index.html").read_text()
    assert "choices:" not in html, "a marker was left unreplaced"
    lists = {"transport": transports.transport_names(),
             "policy": policies.registry.policy_names(), "env": envs.env_names(),
             "fault kind": kind_names(), "protocol": protocol_names(),
             "fault preset": group_options("faults"), "client mode": group_options("client"),
             "experiment": group_options("experiment")}
    for what, names in lists.items():
        names = [name for name in names if ":" not in name]  # not other tests' own
        assert names, what
        missing = [name for name in names if f"<code>{name}</code>" not in html]
        assert not missing, f"{what}: {missing} not on the choices page"
    assert "<code>transports.zmq</code>" in html  # the registry's own entry, not a copy
    assert not re.findall(r"<code>\w+_schema</code>", html)  # ConfigStore schemas: no choices


@pytest.mark.parametrize("link", ["no-such-page.md", "concepts.md#no-such-anchor"])
def test_the_strict_build_fails_on_a_broken_link(tmp_path, link):
    config = docs_copy(tmp_path)
    with (tmp_path / "docs" / "index.md").open("a") as page:
        page.write(f"\nSee [this page]({link}).\n")
    result = mkdocs_build(config, tmp_path / "site")
    assert result.returncode != 0, result.stderr
    assert link in result.stderr, result.stderr


def test_the_build_stops_when_a_registry_does_not_import(tmp_path):
    """A registry that fails to import fails the build, naming it: no page goes out with a
    choice list missing."""
    config = docs_copy(tmp_path / "copy")
    broken = tmp_path / "broken" / "transports"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('transports broken on purpose')\n")
    result = mkdocs_build(config, tmp_path / "site", cwd=tmp_path / "copy",
                          env={"PYTHONPATH": str(broken.parent)})
    assert result.returncode != 0, result.stderr
    assert "cannot import 'transports'" in result.stderr, result.stderr
    assert "transports broken on purpose" in result.stderr, result.stderr


def test_the_hook_refuses_an_unknown_marker():
    import importlib.util
    from types import SimpleNamespace

    from mkdocs.exceptions import PluginError

    spec = importlib.util.spec_from_file_location("choices_hook",
                                                  REPO / "docs" / "hooks" / "choices.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = SimpleNamespace(file=SimpleNamespace(src_uri="page.md"))
    with pytest.raises(PluginError, match="choices:transprots"):
        hook.on_page_markdown("<!-- choices:transprots -->\n", page=page)
    assert "`zmq`" in hook.on_page_markdown("<!-- choices:transports -->\n", page=page)


def test_readme_fits_a_screen():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    long = [(n, len(line)) for n, line in enumerate(lines, 1)
            if len(line) > LINE_MAX_CHARS and not line.startswith("|") and "://" not in line]
    assert not long, f"README.md lines over {LINE_MAX_CHARS} characters: {long}"


def test_readme_points_nowhere_outside_the_repository():
    text = README.read_text()
    assert not MACHINE_PATH.findall(text), MACHINE_PATH.findall(text)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    missing = [t for t in targets if "://" not in t and not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_no_docs_page_names_a_machine_path():
    found = {str(p.relative_to(REPO)): MACHINE_PATH.findall(p.read_text())
             for p in (REPO / "docs").rglob("*.md")}
    assert {page: paths for page, paths in found.items() if paths} == {}

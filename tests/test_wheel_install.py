"""The built wheel works outside the checkout: `conf/` ships inside it and Hydra finds it.

Builds the wheel from a copy of the sources, installs it (no dependencies) into a fresh venv
that borrows this venv's third-party packages through a .pth line, and runs the entry points
from an unrelated directory. A .pth-added directory does not run its own .pth files, so the
checkout's editable install cannot leak into the fresh venv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from harness.loop.ports import default_port

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["conf", "harness", "transports", "policies", "envs", "reports", "pyproject.toml",
           "README.md"]

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp).strip())
    (purelib / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel], cwd=tmp)
    return python


def test_wheel_ships_conf_and_is_imported_from_the_venv(wheel_python, tmp_path):
    out = _run([wheel_python, "-c", "import harness, harness.config as c; "
                "print(harness.__file__); print(c.config_dir())"], cwd=tmp_path)
    package_file, conf_dir = out.split()
    venv = wheel_python.parent.parent
    assert Path(package_file).is_relative_to(venv)
    assert Path(conf_dir) == Path(package_file).parent / "conf"
    assert (Path(conf_dir) / "transport" / "zmq.yaml").is_file()


def test_wheel_holds_every_package_of_the_source_tree(wheel_python, tmp_path):
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts)
                      for name in ("harness", "transports", "policies", "envs", "reports")
                      for p in (ROOT / name).rglob("__init__.py") if "conf" not in p.parts)
    code = ("import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
            "print(importlib.import_module('harness.server').__file__)")
    out = _run([wheel_python, "-c", code, *packages], cwd=tmp_path)
    assert Path(out.strip()).is_relative_to(wheel_python.parent.parent)


def test_wheel_help_and_cfg_job_work_from_another_directory(wheel_python, tmp_path):
    help_text = _run([wheel_python, "-m", "harness", "--help"], cwd=tmp_path)
    assert "transport: grpc" in help_text and "local" in help_text
    job = _run([wheel_python, "-m", "harness", "--cfg", "job", "--resolve", "transport=grpc"],
               cwd=tmp_path)
    assert "kind: grpc" in job and f"listen: 127.0.0.1:{default_port(50051)}" in job
    bench_help = _run([wheel_python, "-m", "harness.bench", "--help"], cwd=tmp_path)
    assert "--round-trips" in bench_help

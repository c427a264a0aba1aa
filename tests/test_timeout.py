"""Every test runs under pytest-timeout (pyproject.toml's `timeout`): a test that hangs
fails with its stack instead of holding CI until its own limit."""

from __future__ import annotations

import subprocess
import sys


def test_every_test_has_a_timeout(pytestconfig):
    assert float(pytestconfig.getini("timeout")) == 600


def test_a_hanging_test_fails_at_its_timeout(tmp_path):
    (tmp_path / "test_hangs.py").write_text("import time\n\ndef test_hangs():\n"
                                            "    time.sleep(30)\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--timeout=1", str(tmp_path / "test_hangs.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Timeout (>1.0s) from pytest-timeout" in result.stdout

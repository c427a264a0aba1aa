"""`python -m harness --help`: its choice lists are read from conf/ and the registries, so a
schema never reads as a choice and a registered name is never missing."""

from __future__ import annotations

import subprocess
import sys

from harness.config import group_options
from harness.faults.kinds import kind_names
from policies.remote.protocols import protocol_names
from transports import transport_names


def test_help_lists_every_choice_and_registered_name_and_no_schema(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "_schema" not in text
    flat = " ".join(line.strip() for line in text.splitlines())  # wrapped lines joined
    assert f"transport: {', '.join(group_options('transport'))}" in flat
    assert f"faults: {', '.join(group_options('faults'))}" in flat
    for names in (transport_names(), kind_names(), protocol_names()):
        built_in = [name for name in names if ":" not in name]  # not other tests' own
        assert ", ".join(built_in) in flat
    assert "record: none" in text and "python -m harness --check" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert list(tmp_path.iterdir()) == []  # help writes no outputs/

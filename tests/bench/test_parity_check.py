"""`python -m harness.bench.parity` (check only) exits non-zero when a digest differs from
the golden file: a check that only logs "DIFFER" and exits 0 passes every CI."""

from __future__ import annotations

import json

import pytest

from harness.bench import parity


def test_a_digest_that_differs_from_golden_fails_the_check(tmp_path, monkeypatch):
    golden = json.loads(parity.GOLDEN.read_text())
    first = next(iter(golden["digests"]))
    golden["digests"][first] = "0" * 64
    altered = tmp_path / "parity.json"
    altered.write_text(json.dumps(golden))
    monkeypatch.setattr(parity, "GOLDEN", altered)
    with pytest.raises(SystemExit) as exited:
        parity.main([])
    assert exited.value.code == 1

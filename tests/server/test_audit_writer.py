"""The audit writer: lines handed to it reach the `harness.audit` logger in order, each the
JSON of its record, and closing writes every queued line (a server that closes or drains
loses none of what it served). Real parts: the logging module, a thread."""

from __future__ import annotations

import json
import logging

from harness.server.audit import AuditWriter


def test_closing_writes_every_queued_line_in_order(caplog):
    caplog.set_level(logging.INFO, logger="harness.audit")
    writer = AuditWriter()
    for seq in range(500):
        writer.write({"seq": seq, "outcome": "served"})
    writer.close()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "harness.audit"]
    assert [line["seq"] for line in lines] == list(range(500))
    writer.close()  # idempotent


def test_a_record_that_is_not_json_is_reported_and_the_next_still_written(caplog):
    caplog.set_level(logging.INFO)
    writer = AuditWriter()
    writer.write({"seq": 1, "bad": object()})
    writer.write({"seq": 2})
    writer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "harness.audit"]
    assert lines == ['{"seq": 2}']
    assert any("could not be written" in r.getMessage() for r in caplog.records)

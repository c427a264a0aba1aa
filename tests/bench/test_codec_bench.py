"""The codec benchmark's plumbing: every message kind is timed, and what it times round-trips.

Tiny repeat counts: this checks what the benchmark measures, not how fast the codec is.
"""

from __future__ import annotations

from harness import protocol
from harness.bench import codec


def test_every_message_kind_is_timed_on_bytes_that_decode_back():
    samples = codec.sample_messages()
    timings = codec.measure(repeats=3)
    assert [t.name for t in timings] == [s.name for s in samples]
    kinds = {type(s.message.body) for s in samples}
    assert kinds == {protocol.Observation, protocol.ActionChunk, protocol.SessionOpen,
                     protocol.Reset, protocol.Error}
    for sample, timing in zip(samples, timings, strict=True):
        buf = protocol.encode(sample.message, jpeg_quality=sample.jpeg_quality)
        assert timing.bytes == len(buf) and timing.runs >= 1
        assert timing.encode_us > 0 and timing.decode_us > 0
        assert type(protocol.decode(buf).body) is type(sample.message.body)
        carries_jpeg = bool(protocol.decode(buf).flags & protocol.Flags.JPEG)
        assert carries_jpeg == (sample.jpeg_quality is not None)

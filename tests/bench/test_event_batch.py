"""`python -m bench.event_batch` compares the two ways an event's data travels to delivery. Its
shape is checked, never a timing; and both ways must give receivers the same JSON, or the
comparison would be of two different results."""

from __future__ import annotations

import json

import pytest

from bench import event_batch


def test_struct_and_json_text_data_give_every_event_the_same_body() -> None:
    payloads = event_batch.job_completed_payloads(5)
    as_struct = event_batch.checked(event_batch.build(payloads, struct=True))
    as_text = event_batch.checked(event_batch.build(payloads, struct=False))
    # The same JSON; the keys of a Struct (a protobuf map) come in no set order, those of JSON
    # text in the emitter's.
    assert [json.loads(e.body) for e in as_struct] == [json.loads(e.body) for e in as_text]
    # Whole numbers are JSON integers either way (`1`, not `1.0`).
    assert all(type(json.loads(e.body)["data"]["attempt_count"]) is int for e in as_text + as_struct)


def test_the_report_has_a_row_per_stage_with_both_paths_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert event_batch.main(["--events", "3", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    stages = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert stages == [
        "relay: build the request", "protobuf: serialize", "protobuf: parse", "delivery: request check",
        "delivery: read and check the events", "bytes per event", "all of the above",
    ]
    for row in rows:
        struct, text, ratio = row.removesuffix(" |").split(" | ")[1:]
        assert float(struct) > 0 and float(text) > 0 and ratio.endswith("×")

"""The typed run record (mergecl.bench.orchestration.records): strict fields, JSON round trip,
old records read with defaults, the row a tuned record belongs to, the generated schema."""

from __future__ import annotations

import json

import pytest
from mergecl.bench.orchestration.records import (
    SCHEMA_VERSION,
    Metrics,
    RunRecord,
    _type_text,
    schema_markdown,
)
from pydantic import ValidationError

MINIMAL = {"method": "seqft", "label": "seqft", "benchmark": "split-mnist", "seed": 0, "status": "ok"}


def test_a_record_survives_a_json_round_trip():
    record = RunRecord(**MINIMAL, schema_version=SCHEMA_VERSION, acc_matrix=[[0.9, 0.0], [0.5, 0.8]],
                       metrics=Metrics(acc=0.65, aaa=0.775, forgetting=0.4, bwt=-0.4))
    again = RunRecord.model_validate(json.loads(json.dumps(record.to_json_dict())))
    assert again == record and again.metrics.acc == 0.65 and again.acc_matrix[1] == [0.5, 0.8]


def test_a_schema_1_record_reads_with_the_later_fields_defaulted():
    old = RunRecord.model_validate(MINIMAL)
    assert old.schema_version == 1 and old.parameterisation == "full" and old.variant == "default"
    assert old.trajectory is None and old.timings.reused_steps == 0 and old.diagnostics == {}
    assert old.ok and old.row_label == "seqft"


def test_a_tuned_record_belongs_to_its_base_row_and_a_failed_one_is_not_ok():
    tuned = RunRecord(**{**MINIMAL, "label": "seqft-tuned"}, variant="tuned", base_label="seqft")
    assert tuned.row_label == "seqft"
    failed = RunRecord(**{**MINIMAL, "status": "failed"}, error="RuntimeError: boom")
    assert not failed.ok


@pytest.mark.parametrize("bad", [{"unknown_field": 1}, {"status": "running"},
                                 {"metrics": {"acc": 0.5, "auc": 0.5}}, {"parameterisation": "dense"}])
def test_unknown_fields_and_values_are_refused(bad):
    with pytest.raises(ValidationError):
        RunRecord.model_validate({**MINIMAL, **bad})


def test_schema_markdown_lists_every_field_with_its_type_and_default():
    text = schema_markdown()
    assert f"(schema version {SCHEMA_VERSION})" in text
    for name in RunRecord.model_fields:
        assert f"| `{name}` |" in text
    assert "| `status` | 'ok' or 'failed' | required |" in text
    assert "| `seed` | int | required |" in text
    assert "## Metrics" in text and "| `acc` | float | required |" in text
    assert _type_text(list[list[float]] | None) == "list[list[float]] or null"

"""Hand-built :class:`RunRecord` models for the reporting tests.

:func:`make_record` fills in only what a test names: metrics are fractions (``acc=0.7`` is
70 %), a failed record has no metrics and an error message, and every record is validated
by ``RunRecord.model_validate`` exactly as the result store's records are.
"""

from __future__ import annotations

from typing import Any

from mergecl.bench.orchestration.records import RunRecord

DEFAULT_BENCHMARK = "mnist-fmnist"


def make_record(
    label: str,
    seed: int = 0,
    acc: float | None = 0.5,
    *,
    benchmark: str = DEFAULT_BENCHMARK,
    method: str | None = None,
    status: str = "ok",
    aaa: float | None = None,
    forgetting: float | None = None,
    bwt: float | None = None,
    til_acc: float | None = None,
    upper_bound: bool = False,
    tuned_values: dict[str, Any] | None = None,
    total_s: float | None = 10.0,
    acc_matrix: list[list[float]] | None = None,
    per_task: list[dict[str, Any]] | None = None,
    error: str = "RuntimeError: boom",
    **fields: Any,
) -> RunRecord:
    """A validated record of ``label`` on ``benchmark`` with ``seed``.

    ``tuned_values`` makes it a tuned record (``variant="tuned"``, ``base_label=label``, its own
    label ``"<label>-tuned"``); any other :class:`RunRecord` field can be passed in ``fields``.
    """
    ok = status == "ok"
    data: dict[str, Any] = {
        "method": method or label, "label": label, "benchmark": benchmark, "seed": seed,
        "status": status, "upper_bound": upper_bound,
        "metrics": {"acc": acc, "aaa": aaa, "forgetting": forgetting, "bwt": bwt} if ok else None,
        "til_metrics": {"acc": til_acc} if ok and til_acc is not None else None,
        "acc_matrix": acc_matrix if ok else None,
        "timings": {"total_s": total_s},
        "diagnostics": {"per_task": per_task} if per_task is not None else {},
        "error": None if ok else error,
    }
    if tuned_values is not None:
        data.update(variant="tuned", base_label=label, label=f"{label}-tuned",
                    tuned_values=tuned_values)
    data.update(fields)
    return RunRecord.model_validate(data)

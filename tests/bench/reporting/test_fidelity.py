"""The fidelity report reads before/after stores and pairs them by seed."""

from __future__ import annotations

from fake_records import make_record
from mergecl.bench.orchestration.store import ResultStore
from mergecl.bench.reporting import fidelity


def _store(root, rows):
    store = ResultStore(root)
    for label, seed, acc in rows:
        store.write(make_record(label, seed, acc, acc_matrix=[[acc, 0.0], [acc, acc]],
                                per_task=[{"merge_coefficient": 1.0}, {"merge_coefficient": 0.25}]))
    return store


def test_report_pairs_before_and_after_by_seed(tmp_path):
    _store(tmp_path / "before", [("pnm", s, 0.70 + 0.01 * s) for s in range(3)]
           + [("seqft", s, 0.6) for s in range(3)])
    _store(tmp_path / "after", [("pnm", s, 0.75 + 0.01 * s) for s in range(3)]
           + [("seqft", s, 0.6) for s in range(3)] + [("pnm-stopgrad", s, 0.8) for s in range(3)])
    out = tmp_path / "fidelity.md"
    assert fidelity.main(["--before", str(tmp_path / "before"), "--after", str(tmp_path / "after"),
                          "--benchmarks", "mnist-fmnist", "--output", str(out)]) == 0
    text = out.read_text()
    pnm_row = next(line for line in text.splitlines() if line.startswith("| pnm |"))
    # before 71.0 ± 1.0, after 76.0 ± 1.0; the paired difference is exactly +5.0 in every seed
    assert "71.0 ± 1.0 (3)" in pnm_row and "76.0 ± 1.0 (3)" in pnm_row
    assert "+5.0 [+5.0, +5.0]" in pnm_row
    stopgrad_row = next(line for line in text.splitlines() if line.startswith("| pnm-stopgrad |"))
    assert "| — | 80.0 ± 0.0 (3) | — |" in stopgrad_row     # only after: no Δ
    assert "(1.00, 0.25)" in text                           # P&M's α per task
    assert f"the result store `{tmp_path / 'before'}`" in text


def test_load_records_filters_benchmarks(tmp_path):
    store = ResultStore(tmp_path)
    store.write(make_record("seqft", 0, 0.5, benchmark="mnist-fmnist"))
    store.write(make_record("seqft", 0, 0.5, benchmark="rotated-mnist"))
    assert [r.benchmark for r in fidelity.load_records(str(tmp_path), ["rotated-mnist"])] == ["rotated-mnist"]

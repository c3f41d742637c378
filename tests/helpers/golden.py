"""The quick grid's accuracy matrices, committed: behaviour must not change unnoticed.

``golden_quick_grid.json`` holds, for every method × parameterisation of the end-to-end test
(quick preset, split-mnist, seed 0), the CIL and TIL accuracy matrices, and the CPU and torch
version they were produced with. On that CPU and torch version a run must reproduce them bit
for bit; elsewhere (another CPU's kernels sum in another order) every entry must be within one
test sample of the committed value.

Regenerate — only for a deliberate change of behaviour, named in the commit — with::

    .venv/bin/python tests/helpers/golden.py
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden_quick_grid.json")
METHODS = ["seqft", "joint", "avg", "coma", "dare", "pnm", "magmax", "ties", "random-mix",
           "task-arithmetic", "became", "trm", "ewc", "lwf"]
PARAMETERISATIONS = ["full", "lora"]


def machine() -> dict[str, str]:
    import torch

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "torch": torch.__version__}


def load() -> dict:
    return json.loads(GOLDEN.read_text())


def check(record, method: str, parameterisation: str) -> None:
    """Assert the record's matrices equal the committed ones (see the module docstring)."""
    golden = load()
    expected = golden["runs"][f"{method}/{parameterisation}"]
    same_machine = golden["machine"] == machine()
    for key in ("acc_matrix", "til_acc_matrix"):
        got, want = getattr(record, key), expected[key]
        if same_machine:
            assert got == want, (key, got, want)
        else:
            tolerance = 1.0 / expected["test_samples_per_experience"] + 1e-9
            assert len(got) == len(want)
            for got_row, want_row in zip(got, want):
                assert all(abs(g - w) <= tolerance for g, w in zip(got_row, want_row)), (key, got, want)


def write() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import quick_run

    runs = {}
    for method in METHODS:
        for parameterisation in PARAMETERISATIONS:
            record = quick_run(method, parameterisation=parameterisation)
            assert record.status == "ok", record.error
            runs[f"{method}/{parameterisation}"] = {
                "acc_matrix": record.acc_matrix, "til_acc_matrix": record.til_acc_matrix,
                "test_samples_per_experience": 2 * record.config["test_per_class"]}
            print(method, parameterisation, record.metrics.acc)
    GOLDEN.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    import os
    import tempfile

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MERGECL_CACHE", tempfile.mkdtemp(prefix="mergecl-golden-"))
    write()

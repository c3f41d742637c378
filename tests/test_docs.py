"""The documentation cannot silently go stale.

* ``docs/record-schema.md`` is exactly what ``schema_markdown()`` generates;
* every repository path named in ``docs/ARCHITECTURE.md`` and ``docs/adding-a-method.md`` exists,
  and the layering rule stated there (``methods/`` never imports ``bench/``) holds;
* the method examples of ``docs/adding-a-method.md`` (each code block right after an
  ``<!-- example: NAME -->`` comment) run end to end through ``mergecl run --plugins`` on the
  quick preset, and their records carry the coefficients their formulas give.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCHEMA_DOC = DOCS / "record-schema.md"
# Not `python -m mergecl.bench.orchestration.records`: run as __main__, the module spells the
# record's nested types `__main__.Metrics` instead of `mergecl.bench.orchestration.records.Metrics`,
# so its output differs from schema_markdown() imported.
REGENERATE = ('python -c "import sys; from mergecl.bench.orchestration.records import '
              'schema_markdown; sys.stdout.write(schema_markdown())" > docs/record-schema.md')

PATH_ROOTS = ("bench", "methods", "docs", "tests", "mergecl")
BACKTICKED = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(rf"(?:{'|'.join(PATH_ROOTS)})/[A-Za-z0-9_./-]*")
BARE_FILE_PATH = re.compile(rf"(?<![\w/.<])(?:{'|'.join(PATH_ROOTS)})/[A-Za-z0-9_./-]*\.(?:py|md|yaml)\b")
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\s*```python\n(.*?)```", re.S)


# ------------------------------------------------------------------------------ record schema


def test_record_schema_doc_is_generated_from_the_model():
    from mergecl.bench.orchestration.records import schema_markdown

    committed = SCHEMA_DOC.read_text(encoding="utf-8") if SCHEMA_DOC.is_file() else ""
    assert committed == schema_markdown(), (
        f"docs/record-schema.md is out of date with mergecl.bench.orchestration.records; "
        f"regenerate it with `{REGENERATE}` and commit it")


# ------------------------------------------------------------------------------ paths


def mentioned_paths(text: str) -> set[str]:
    """Repository paths in a Markdown text: every backticked span that is a path under one of
    ``PATH_ROOTS``, and every bare ``<root>/….py|md|yaml`` (placeholders like ``<name>`` are
    not paths)."""
    paths = {span for span in BACKTICKED.findall(text) if REPO_PATH.fullmatch(span)}
    paths |= set(BARE_FILE_PATH.findall(text))
    return {p for p in paths if p.split("/", 1)[1] and not p.endswith(".")}


def test_path_extraction_finds_backticked_and_bare_paths():
    text = ("`bench/cli.py` and `methods/` and `docs/x.md`, in (methods/merging.py); "
            "not `methods/<name>.py`, `mergecl run`, `<out>/<benchmark>/seed<k>.json`")
    assert mentioned_paths(text) == {"bench/cli.py", "docs/x.md", "methods/merging.py"}


@pytest.mark.parametrize("doc", ["ARCHITECTURE.md", "adding-a-method.md"])
def test_every_repository_path_in_the_docs_exists(doc):
    paths = mentioned_paths((DOCS / doc).read_text(encoding="utf-8"))
    if doc == "ARCHITECTURE.md":
        assert len(paths) >= 40, sorted(paths)  # the extraction still finds the module map
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/{doc} names paths that do not exist: {missing}"


def test_methods_never_import_bench():
    """The layering rule of docs/ARCHITECTURE.md, on the import statements of methods/."""
    offenders = []
    for path in sorted((ROOT / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} imports {m}" for m in modules
                          if m.split(".")[:2] == ["mergecl", "bench"] or m.split(".")[0] == "bench"]
    assert not offenders, offenders


# ------------------------------------------------------------------------------ method examples


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall((DOCS / "adding-a-method.md").read_text(encoding="utf-8")))


def write_example(name: str, directory: Path) -> Path:
    path = directory / f"{name.replace('-', '_')}.py"
    path.write_text(examples()[name], encoding="utf-8")
    return path


def load_example(name: str, directory: Path):
    path = write_example(name, directory)
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def isolated_registry(monkeypatch):
    """Methods registered by a test's plugin files do not outlive the test."""
    from mergecl.methods import registry

    monkeypatch.setattr(registry, "_extra", dict(registry._extra))


def run_example(path: Path, method: str, out: Path, data_root: Path, *sets: str):
    """``mergecl run --plugins path`` on two experiences of the quick preset; the record."""
    from mergecl.bench.cli import main
    from mergecl.bench.orchestration.store import ResultStore, RunKey

    argv = ["run", "--plugins", str(path), "--method", method, "--benchmark", "split-mnist",
            "--preset", "quick", "--set", "n_experiences=2", "--set", "trajectories=off",
            "--data-root", str(data_root), "--out", str(out), "--quiet"]
    for assignment in sets:
        argv += ["--set", assignment]
    assert main(argv) == 0
    record = ResultStore(out).read(RunKey("split-mnist", method, 0))
    assert record is not None and record.status == "ok", record and record.error
    assert len(record.acc_matrix) == 2 and all(len(row) == 2 for row in record.acc_matrix)
    return record


def listed_timing(capsys, path: Path, method: str) -> str:
    """The timing column of ``method`` in ``mergecl methods --plugins path``."""
    from mergecl.bench.cli import main

    capsys.readouterr()
    assert main(["methods", "--plugins", str(path)]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    cells = {row[1].strip(): [c.strip() for c in row[1:-1]] for row in rows}
    return cells[method][2]


def test_the_guide_has_an_online_and_a_post_hoc_example():
    found = examples()
    assert set(found) == {"ema", "tv-ema"}
    assert "class EMAMerge(MergeMethod)" in found["ema"]
    assert "class TaskVectorEMA(AnchoredMerge)" in found["tv-ema"]


def test_example_rules_match_hand_computed_cases(tmp_path, isolated_registry):
    ema = load_example("ema", tmp_path)
    previous, trained = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 2.0])}
    merged = ema.ema_merge(previous, trained, 0.25)
    torch.testing.assert_close(merged["w"], torch.tensor([1.0, 2.0]))  # 0.75·0 + 0.25·4, 2
    assert previous["w"].tolist() == [0.0, 2.0] and trained["w"].tolist() == [4.0, 2.0]

    tv = load_example("tv-ema", tmp_path)
    first = {"w": torch.tensor([0.0, 4.0])}
    running = tv.task_vector_ema(None, first, 0.25)
    assert torch.equal(running["w"], first["w"]) and running["w"] is not first["w"]
    folded = tv.task_vector_ema(running, {"w": torch.tensor([4.0, 0.0])}, 0.25)
    torch.testing.assert_close(folded["w"], torch.tensor([1.0, 3.0]))  # 0.75·τ̂ + 0.25·τ
    assert running["w"].tolist() == [0.0, 4.0]


@pytest.mark.e2e
def test_online_example_runs_end_to_end(tmp_path, data_root, isolated_registry, capsys):
    path = write_example("ema", tmp_path)
    beta = 0.3
    record = run_example(path, "ema", tmp_path / "out", data_root, f"params.beta={beta}")
    assert record.method == "ema" and record.config["params"] == {"beta": beta}
    per_task = record.diagnostics["per_task"]
    assert [d["task"] for d in per_task] == [0, 1]
    assert [d["merge_coefficient"] for d in per_task] == [1.0, beta]  # β_0 = 1, then β
    # the example is CoMA's rule: the built-in with the same weight gives the same numbers
    coma = run_example(path, "coma", tmp_path / "out", data_root, f"params.weight={beta}")
    assert record.acc_matrix == coma.acc_matrix and record.til_acc_matrix == coma.til_acc_matrix
    assert listed_timing(capsys, path, "ema") == "online"


@pytest.mark.e2e
def test_post_hoc_example_runs_end_to_end(tmp_path, data_root, isolated_registry, capsys):
    path = write_example("tv-ema", tmp_path)
    beta, lam = 0.25, 0.8
    record = run_example(path, "tv-ema", tmp_path / "out", data_root,
                         f"params.beta={beta}", f"params.lam={lam}")
    assert record.config["params"] == {"head": "trained", "beta": beta, "lam": lam}
    per_task = record.diagnostics["per_task"]
    assert [d["merge_coefficient"] for d in per_task] == [lam, lam]  # θ̂_t = θ₀ + λ·τ̂_t
    assert [d["task_vector_weight"] for d in per_task] == [1.0, beta]  # τ̂_0 = τ_0, then β
    assert listed_timing(capsys, path, "tv-ema") == "post-hoc"

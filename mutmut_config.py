"""Mutation testing of the merge core, the metrics, the head rule and the methods' pure rules.

Run by ``make mutate`` (not part of ``make test`` or CI); docs/mutation.md has the scope, the
results and the argument for every surviving mutant. This file is both mutmut 2's hook module
(mutmut imports ``mutmut_config`` from the folder it runs in) and the driver::

    python mutmut_config.py run        # mutate the scope, then print the results
    python mutmut_config.py results    # print the stored results again (counts, survivors' diffs)

Why mutmut 2 (pinned 2.5.1, the ``mutate`` extra) and a private copy of the tree:

* mutmut 3 copies the sources into ``mutants/`` and puts that folder first on ``sys.path``; here
  ``mergecl.bench`` and ``mergecl.methods`` are the folders ``bench/`` and ``methods/``
  (pyproject ``package-dir``), resolved by the editable install's finder to the checkout, so the
  tests would import the unmutated code (or, in ``mutants/``, top-level ``methods``/``bench``
  that nothing imports). mutmut 2 mutates the file in place, which works with any layout.
* In place, though, means a mutated ``methods/merging.py`` in the checkout for the length of the
  run, seen by anything else started from it. So the driver copies the working tree (tracked and
  untracked, not ignored files) to ``.mutmut/`` (git-ignored), lays it out as installed
  (``mergecl/bench`` and ``mergecl/methods`` symlinked to the copy's ``bench/`` and ``methods/``;
  checked before the run: every module in scope must import from the copy), and mutates there. The checkout's sources are never written, so an
  interrupted or killed run leaves nothing behind; the copy is refreshed from the checkout at
  every run (its ``.mutmut-cache`` is kept: killed mutants stay killed, the others are tested
  again when the tests changed).

Scope: :data:`SCOPE` maps each file to the functions mutated (``None``: the whole module) and
the tests that judge it (a targeted ``pytest -x -q`` run per file, set by :func:`pre_mutation`).
The lines outside those functions, docstrings, and the lines of ``raise`` statements (the text
of error messages; whether the error is raised is decided by the mutated ``if`` above it) are
left out by a generated patch file (mutmut 2's ``--use-patch-file``: only lines the patch adds
are mutated), so they are neither mutated nor counted.
"""

from __future__ import annotations

import ast
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent
WORK = ".mutmut"  # the private copy (git-ignored), relative to the checkout
PATCH = ".mutmut-scope.patch"  # the generated line whitelist, inside the copy
# Targeted runs: no e2e tests; ``-p mutmut_config`` (below) skips the Avalanche import; the one
# test of that registration is deselected. hydra's pytest plugin is not needed either.
PYTEST = ("python -m pytest -x -q -m 'not e2e' -p mutmut_config -p no:hydra_pytest --deselect "
          "tests/methods/test_base.py::test_hooks_match_avalanche_and_plugins_are_avalanche_plugins")

# file -> (functions mutated, None = whole module; the tests that judge it)
SCOPE: dict[str, tuple[list[str] | None, list[str]]] = {
    "methods/merging.py": (None, ["tests/methods/test_merging.py"]),
    "bench/reporting/metrics.py": (None, ["tests/bench/reporting/test_metrics.py"]),
    # the head rule: which head rows a merge scales and which are taken as trained
    "methods/base.py": (
        ["loss_class_indices", "MethodContext.seen_classes", "MethodContext.new_classes",
         "MethodContext.loss_classes", "head_masks", "keep_trained_where_unmasked"],
        ["tests/methods/test_base.py", "tests/methods/test_posthoc.py",
         "tests/methods/test_avg.py"]),
    "methods/posthoc.py": (
        ["AnchoredMerge.body_names", "AnchoredMerge.record_trained_head", "AnchoredMerge.merge"],
        ["tests/methods/test_posthoc.py", "tests/methods/test_magmax.py"]),
    # the methods' rules (their Avalanche plug-in shells are out of scope)
    "methods/magmax.py": (
        ["max_magnitude", "_check_fold_backend", "max_magnitude_fold_", "MagMax.train_from",
         "MagMax.combine"],
        ["tests/methods/test_magmax.py"]),
    "methods/ties.py": (
        ["trim_top_k", "elect_sign", "disjoint_merge", "ties_merge", "TiesMerge.combine",
         "TiesMerge.merge_diagnostics"],
        ["tests/methods/test_ties.py"]),
    "methods/random_mix.py": (
        ["random_mix", "random_mix_fold_", "RandomMix.combine"],
        ["tests/methods/test_random_mix.py"]),
    "methods/task_arithmetic.py": (
        ["TaskArithmetic.combine"], ["tests/methods/test_task_arithmetic.py"]),
    "methods/avg.py": (["ModelAveraging.merge"], ["tests/methods/test_avg.py"]),
    "methods/coma.py": (["CoMA.merge"], ["tests/methods/test_coma.py"]),
    "methods/dare.py": (["dare", "DareMerge.merge"], ["tests/methods/test_dare.py"]),
    "methods/pnm.py": (
        ["_clip_alpha", "pnm_alpha", "PnMStatistics", "pnm_merge"],
        ["tests/methods/test_pnm.py"]),
    "methods/opcm.py": (
        ["split_rank", "project_out", "is_matrix", "vector_norm", "opcm_update", "OPCM.combine",
         "OPCM.merge_diagnostics"],
        ["tests/methods/test_opcm.py"]),
    "methods/dop.py": (
        ["leading_subspace", "projection_loss", "_dot", "min_norm_weights",
         "min_norm_weights_of_products", "cheaper_projectors", "projection_loss_and_gradient",
         "_fused_adam", "dop_merge_matrix", "DOP.combine", "DOP.merge_diagnostics"],
        ["tests/methods/test_dop.py"]),
    "methods/became.py": (
        ["became_lambda", "stable_steps", "energy_threshold", "accumulate_fisher",
         "projectable_layers", "project_step_"],
        ["tests/methods/test_became.py"]),
    # oneDNN's products: torch's, by another kernel library
    "methods/matmul.py": (
        ["onednn_available", "uses_onednn", "torch_matmul", "_Linear.setup_context",
         "_Linear.backward", "_runs_onednn", "linear", "matmul"],
        ["tests/methods/test_matmul.py"]),
    # the convolution shortcuts: the same function as torch's convolution, by other kernels
    "bench/training/fast_convs.py": (
        ["_same_padding", "single_window_depthwise", "PointwiseConv2d.forward",
         "_SingleWindowDepthwise.forward", "DepthwiseConv2d._padding", "DepthwiseConv2dSame._padding",
         "_fast_class", "use_fast_convolutions", "use_torch_convolutions"],
        ["tests/bench/training/test_fast_convs.py"]),
    "methods/trm.py": (
        ["_round_half_up", "checkpoint_steps", "coefficient_groups", "trajectory_directions",
         "candidate_state", "_restricted", "alignment_loss", "consistency_loss", "gradient_norm",
         "gradient_floor_penalty", "entropy_floor_penalty"],
        ["tests/methods/test_trm.py"]),
}


# ------------------------------------------------------------------------------ the scope


def _definitions(tree: ast.Module) -> dict[str, ast.AST]:
    """{qualified name: node} of the module's top-level functions/classes and their methods."""
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


def _span(node: ast.AST) -> set[int]:
    return set(range(node.lineno, node.end_lineno + 1))


def scope_lines(path: Path, functions: list[str] | None) -> set[int]:
    """1-based line numbers mutated in ``path``: the functions' lines (the whole module for
    None), less docstrings and ``raise`` statements."""
    tree = ast.parse(path.read_text())
    if functions is None:
        lines = set(range(1, len(path.read_text().splitlines()) + 1))
    else:
        definitions = _definitions(tree)
        missing = [name for name in functions if name not in definitions]
        if missing:
            raise SystemExit(f"mutmut_config: {path} has no {missing} (update SCOPE)")
        lines = set().union(*(_span(definitions[name]) for name in functions))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise):
            lines -= _span(node)
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            lines -= _span(body[0])
    return lines


def scope_patch(root: Path) -> str:
    """A unified diff that 'adds' exactly the lines in scope (the others are context)."""
    parts = []
    for name, (functions, _) in SCOPE.items():
        source = (root / name).read_text().splitlines()
        wanted = scope_lines(root / name, functions)
        context = len(source) - len(wanted & set(range(1, len(source) + 1)))
        parts.append(f"diff {name} {name}\n--- {name}\n+++ {name}\n"
                     f"@@ -1,{context} +1,{len(source)} @@\n")
        parts.extend(("+" if number in wanted else " ") + line + "\n"
                     for number, line in enumerate(source, start=1))
    return "".join(parts)


def runner(test_files: list[str]) -> str:
    return f"{PYTEST} {' '.join(test_files)}"


def all_tests() -> list[str]:
    return sorted({test for _, tests in SCOPE.values() for test in tests})


# ------------------------------------------------------------------------------ mutmut hooks


def pre_mutation(context) -> None:
    """Judge each mutant by the tests of its own file only."""
    entry = SCOPE.get(os.path.normpath(context.filename))
    if entry is not None:
        context.config.test_command = runner(entry[1])


def init() -> None:
    """mutmut hook, called once before the baseline run: correct mutmut 2.5.1's cache lookup.

    Its ``cache.get_cached_mutation_statuses`` (which decides, at the start of a run, which
    mutants are tested again) memoises the cached ``Line`` by the line's *text*, so a mutant on
    a line repeating an earlier line's text (``continue``, ``@property``, ``return out``…) is
    given the status of the earlier line's mutant: once that one is killed, the later one is
    never tested again and keeps its old status (a survivor that new tests kill stays
    'survived'). This replacement looks every mutant up by its own line (text and number), as
    the per-mutant ``cache.cached_mutation_status`` already does."""
    from mutmut import OK_KILLED, UNTESTED, cache
    from pony.orm import db_session

    @cache.init_db
    @db_session
    def get_cached_mutation_statuses(filename, mutations, hash_of_tests):
        sourcefile = cache.SourceFile.get(filename=filename)
        assert sourcefile
        result = {}
        for mutation_id in mutations:
            line = cache.Line.get(sourcefile=sourcefile, line=mutation_id.line,
                                  line_number=mutation_id.line_number)
            assert line
            mutant = cache.get_or_create(cache.Mutant, line=line, index=mutation_id.index,
                                         defaults=dict(status=UNTESTED))
            stale = (mutant.tested_against_hash != hash_of_tests
                     or cache.NO_TESTS_FOUND in (mutant.tested_against_hash, hash_of_tests))
            result[mutation_id] = UNTESTED if mutant.status != OK_KILLED and stale else mutant.status
        return result

    cache.get_cached_mutation_statuses = get_cached_mutation_statuses


# ------------------------------------------------------------------------------ pytest plugin


def pytest_configure(config) -> None:
    """``-p mutmut_config``: mark the method plugins as registered with Avalanche, so that
    building one does not import Avalanche (≈ 6 s per test run, paid again by every mutant;
    the registration is outside the scope, and its one test is deselected)."""
    from mergecl.methods import base

    base._registered_with_avalanche = True


# ------------------------------------------------------------------------------ the driver


def _copy_tree(work: Path) -> None:
    """Refresh the private copy from the working tree (tracked + untracked, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode()
    names = [name for name in listed.split("\0") if name]
    for name in names:
        source = ROOT / name
        if source.is_file():
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for leftover in work.rglob("*.py.bak"):  # an interrupted mutmut's backup: the copy is fresh
        leftover.unlink()


def _link_packages(work: Path) -> None:
    """Lay the copy out as installed (pyproject ``package-dir``): ``mergecl/bench`` and
    ``mergecl/methods`` become symlinks to the copy's ``bench/`` and ``methods/``, so that
    ``import mergecl.methods.merging`` (from the copy as working folder, or with the copy on
    ``PYTHONPATH``) reads the copy's — mutated — file, ahead of the editable install's finder."""
    config = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name, folder in config["package-dir"].items():
        link = work / Path(*name.split("."))
        if folder != name.replace(".", "/") and not link.is_symlink():
            link.symlink_to(os.path.relpath(work / folder, link.parent), target_is_directory=True)


def _check_imports(work: Path, env: dict[str, str]) -> None:
    """Every module in scope must be imported from the copy, or the run would test nothing."""
    mapping = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = []
    for name in SCOPE:
        folder, _, rest = name.partition("/")
        package = next(pkg for pkg, path in mapping.items() if path == folder)
        modules.append(package + "." + rest[:-3].replace("/", "."))
    code = ("import importlib, os, sys\n"
            "for m in sys.argv[1:]:\n"
            "    print(os.path.realpath(importlib.import_module(m).__file__))\n")
    out = subprocess.run([sys.executable, "-c", code, *modules], cwd=work, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    for module, name, path in zip(modules, SCOPE, out):
        if Path(path) != (work / name).resolve():
            raise SystemExit(f"mutmut_config: {module} imports from {path}, not the copy "
                             f"{work / name}; the mutants would not be tested")


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def counts(work: Path) -> dict[str, dict[str, int]]:
    """{file: {status: count}} of the mutants in scope, from mutmut's cache."""
    db = sqlite3.connect(work / ".mutmut-cache")
    rows = db.execute("SELECT SourceFile.filename, Mutant.status, COUNT(*) FROM Mutant "
                      "JOIN Line ON Mutant.line = Line.id "
                      "JOIN SourceFile ON Line.sourcefile = SourceFile.id "
                      "GROUP BY SourceFile.filename, Mutant.status").fetchall()
    out: dict[str, dict[str, int]] = {name: {} for name in SCOPE}
    for filename, status, count in rows:
        out.setdefault(filename, {})[status] = count
    return out


STATUS_COLUMNS = [("ok_killed", "killed"), ("bad_survived", "survived"),
                  ("bad_timeout", "timeout"), ("ok_suspicious", "suspicious"),
                  ("skipped", "skipped"), ("untested", "untested")]


def print_results(work: Path) -> None:
    table = counts(work)
    header = f"{'file':32}" + "".join(f"{label:>11}" for _, label in STATUS_COLUMNS) + f"{'killed %':>10}"
    print(header)
    totals = dict.fromkeys([key for key, _ in STATUS_COLUMNS], 0)
    for name in SCOPE:
        row = table.get(name, {})
        for key, _ in STATUS_COLUMNS:
            totals[key] += row.get(key, 0)
        print(_row(name, row))
    print(_row("total", totals))
    remaining = _remaining(work)
    print(f"\n{len(remaining)} surviving / timed-out / suspicious mutant(s)")
    for mutant_id, status, diff in remaining:
        print(f"\n# mutant {mutant_id} ({status})\n{diff}")


def _remaining(work: Path) -> list[tuple[int, str, str]]:
    """(id, status, diff) of every mutant not killed. The diff is taken against the checkout's
    source, never the copy's file, which holds a mutant while a run is going on."""
    import difflib

    from mutmut import Context, RelativeMutationID, mutate

    db = sqlite3.connect(work / ".mutmut-cache")
    rows = db.execute("SELECT Mutant.id, Mutant.status, SourceFile.filename, Line.line, "
                      "Line.line_number, Mutant.\"index\" FROM Mutant "
                      "JOIN Line ON Mutant.line = Line.id "
                      "JOIN SourceFile ON Line.sourcefile = SourceFile.id "
                      "WHERE Mutant.status IN ('bad_survived', 'bad_timeout', 'ok_suspicious') "
                      "ORDER BY Mutant.id").fetchall()
    out = []
    for mutant_id, status, filename, line, line_number, index in rows:
        source = (ROOT / filename).read_text()
        context = Context(source=source, filename=filename, mutation_id=RelativeMutationID(
            line=line, index=index, line_number=line_number, filename=filename))
        mutated, _ = mutate(context)
        diff = "".join(difflib.unified_diff(source.splitlines(True), mutated.splitlines(True),
                                            fromfile=filename, tofile=filename, n=0))
        out.append((mutant_id, status, diff.rstrip("\n")))
    return out


def _row(name: str, row: dict[str, int]) -> str:
    judged = sum(row.get(key, 0) for key in ("ok_killed", "bad_survived", "bad_timeout", "ok_suspicious"))
    killed = row.get("ok_killed", 0) + row.get("ok_suspicious", 0)
    share = f"{100 * killed / judged:.1f}" if judged else "-"
    return f"{name:32}" + "".join(f"{row.get(key, 0):>11}" for key, _ in STATUS_COLUMNS) + f"{share:>10}"


def run(work: Path) -> int:
    work.mkdir(exist_ok=True)
    _copy_tree(work)
    _link_packages(work)
    env = _env(work)
    _check_imports(work, env)
    (work / PATCH).write_text(scope_patch(work))
    print(f"mutmut in {work} (a copy of the working tree); baseline runner: {runner(all_tests())}",
          flush=True)
    code = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--paths-to-mutate", ",".join(SCOPE),
         "--tests-dir", "tests", "--runner", runner(all_tests()), "--use-patch-file", PATCH,
         "--simple-output", "--no-progress"],
        cwd=work, env=env).returncode
    print(f"\nmutmut run exit code {code} (bit 2: survivors, 4: timeouts, 8: suspicious)\n")
    print_results(work)
    return 0 if code in (0, 2, 4, 6, 8, 10, 12, 14) else code


def main(argv: list[str]) -> int:
    work = ROOT / WORK
    command = argv[0] if argv else "run"
    if command == "run":
        return run(work)
    if command == "results":
        print_results(work)
        return 0
    raise SystemExit(f"usage: python mutmut_config.py [run|results], not {argv}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

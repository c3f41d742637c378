"""Tuning (mergecl.bench.orchestration.tuning): equal budgets, the defaults first, selection on
the validation split only (poisoned test labels change nothing), a post-hoc sweep equal to
separate runs, bad tuning input refused before any run, choices shipped as config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from mergecl.bench.cli import main
from mergecl.bench.config.grid_config import MethodEntry, parse_grid
from mergecl.bench.config.run_config import ConfigError, RunConfig
from mergecl.bench.orchestration.tuning import candidates, read_tuning_record, search_space
from mergecl.bench.training.run import run_one
from mergecl.methods.coma import CoMAParams
from mergecl.methods.magmax import MagMaxParams

PROTOCOL = {"frozen_blocks": 5, "validation_fraction": 0.25, "train_per_class": 12, "epochs": 2,
            "lr": 3e-3, "head_lr": 3e-2, "max_steps_per_exp": None}
GRID = {
    "title": "tuning test", "preset": "quick", "seeds": [0, 1], "benchmarks": ["split-fmnist"],
    "set": PROTOCOL,
    "methods": [{"label": "magmax", "method": "magmax", "tune": {"lam": [0.3, 1.0, 1.5]}},
                {"label": "coma", "method": "coma", "tune": {"weight": [0.2, 0.8]}},
                "seqft"],
    "tune": {"budget": 3, "search": "grid", "seeds": [0]},
}


def test_candidates_put_the_defaults_first_and_respect_the_budget():
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    grid = candidates(space, {"a": 2, "b": "y"}, 4, "grid", "k")
    assert grid[0] == {"a": 2, "b": "y"} and len(grid) == 4
    assert grid[1:] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}]
    drawn = candidates(space, {"a": 2, "b": "y"}, 4, "random", "k")
    assert drawn == candidates(space, {"a": 2, "b": "y"}, 4, "random", "k")  # seeded
    assert drawn[0] == {"a": 2, "b": "y"} and len({str(c) for c in drawn}) == 4
    assert len(candidates(space, {"a": 2, "b": "y"}, 100, "random", "k")) == 6  # the whole space
    assert candidates({"a": [1, 2]}, {"a": 9}, 2, "grid", "k") == [{"a": 9}, {"a": 1}]


def test_bad_tuning_input_is_refused_naming_the_accepted_values():
    entry = MethodEntry("magmax", "magmax", {}, tune={"lam": []})
    with pytest.raises(ConfigError, match="search space of 'lam' is empty") as empty:
        search_space(entry, MagMaxParams)
    # the message names what is accepted: the declared space and the parameter's range
    assert ("accepted: a non-empty list of values for 'lam' within 0.0 ≤ lam ≤ 10.0, e.g. the "
            "declared space [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.2, 1.5]") in str(empty.value)
    with pytest.raises(ConfigError, match="search space of 'variant' is empty") as empty:
        search_space(MethodEntry("magmax", "magmax", {}, tune={"variant": []}), MagMaxParams)
    assert "accepted: a non-empty list of values for 'variant' among 'sequential', 'ind'" in str(empty.value)
    with pytest.raises(ConfigError, match="unknown parameter 'lambda'; accepted: head, lam, variant"):
        search_space(MethodEntry("magmax", "magmax", {}, tune={"lambda": [1.0]}), MagMaxParams)
    with pytest.raises(ConfigError, match="value 1.5 of 'weight' is not accepted"):
        search_space(MethodEntry("coma", "coma", {}, tune={"weight": [0.5, 1.5]}), CoMAParams)
    with pytest.raises(ConfigError, match="budget"):
        parse_grid({**GRID, "tune": {"budget": 0}})
    with pytest.raises(ConfigError, match="budget"):
        candidates({"a": [1]}, {"a": 1}, 0, "grid", "k")
    with pytest.raises(ConfigError, match="random or grid"):
        candidates({"a": [1]}, {"a": 1}, 1, "bayes", "k")


def test_tune_stores_its_runs_apart_from_the_results_by_default():
    from mergecl.bench.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["tune"]).out == ".mergecl-cache/tuning"  # as `make tune`
    assert parser.parse_args(["leaderboard"]).out == "results"


def _tune(tmp_path: Path, name: str) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(GRID))
    out = tmp_path / name
    assert main(["tune", "--config", str(config), "--method", "magmax", "--method", "coma",
                 "--out", str(out), "--workers", "1", "--quiet"]) == 0
    return out


@pytest.mark.e2e
def test_tuning_never_reads_test_data(tmp_path, monkeypatch):
    clean = _tune(tmp_path, "clean")
    from mergecl.bench.streams import benchmarks
    from mergecl.bench.training import run

    build = benchmarks.build_benchmark

    def poisoned(cfg):  # every test label replaced by its task's first class
        built = build(cfg)
        test = [(x, torch.full_like(y, int(y.min()))) for x, y in built.test_tensors]
        return benchmarks.with_tensors(built, built.train_tensors, test)

    monkeypatch.setattr(run, "build_benchmark", poisoned)  # what run_one builds its stream with
    monkeypatch.setenv("MERGECL_TRAJECTORIES", str(tmp_path / "poisoned-trajectories"))
    dirty = _tune(tmp_path, "dirty")
    for label in ("magmax", "coma"):
        a = read_tuning_record(clean, "split-fmnist", label)
        b = read_tuning_record(dirty, "split-fmnist", label)
        assert a.choice == b.choice and a.score == b.score
        assert [c.scores for c in a.candidates] == [c.scores for c in b.candidates]
        assert a.evaluated == 3 if label == "magmax" else 2  # a space smaller than the budget
        # every seed record of every configuration: the same validation rows (CIL and TIL per
        # task), sizes and held-out indices, not only the same mean
        for candidate in a.candidates:
            seeds = sorted((clean / "split-fmnist" / candidate.label).glob("seed*.json"))
            assert [p.name for p in seeds] == ["seed0.json"], seeds  # the tuning seeds
            for path in seeds:
                kept = json.loads(path.read_text())["validation"]
                seen = json.loads((dirty / "split-fmnist" / candidate.label / path.name).read_text())
                assert kept is not None and kept["row"] and kept["til_row"], kept
                assert kept == seen["validation"], (candidate.label, path.name)
    record = json.loads((clean / "split-fmnist" / "magmax.t0" / "seed0.json").read_text())
    poisoned_record = json.loads((dirty / "split-fmnist" / "magmax.t0" / "seed0.json").read_text())
    assert record["acc_matrix"] != poisoned_record["acc_matrix"]  # the test data did change


@pytest.mark.e2e
def test_post_hoc_sweep_equals_separate_runs(tmp_path):
    from mergecl.bench.orchestration.store import ResultStore

    out = _tune(tmp_path, "sweep")
    tuning = read_tuning_record(out, "split-fmnist", "magmax")
    assert [c.params["lam"] for c in tuning.candidates] == [0.5, 0.3, 1.0]  # the default first
    # one trajectory trained (at most once) and replayed by the other configurations
    assert tuning.cost.reused_steps > 0 and tuning.cost.reused_steps >= 2 * tuning.cost.train_steps
    store = ResultStore(out)
    for candidate in tuning.candidates:
        record = store.read(next(k for k in store.keys(labels=[candidate.label])))
        alone = run_one(RunConfig(**{**record.config, "trajectories": "off"}))
        assert alone.acc_matrix == record.acc_matrix and alone.validation == record.validation


@pytest.mark.e2e
def test_all_ships_choices_and_tuned_rows_use_them(tmp_path, monkeypatch):
    from mergecl.bench.config import tuned
    from mergecl.bench.config.grid_config import expand_grid

    shipped = tmp_path / "tuned"
    monkeypatch.setattr(tuned, "TUNED_DIR", shipped)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({**GRID, "methods": GRID["methods"][:1]}))
    out = tmp_path / "out"
    assert main(["tune", "--config", str(grid_file), "--all", "--out", str(out), "--workers", "1",
                 "--quiet"]) == 0
    written = yaml.safe_load((shipped / "split-fmnist.yaml").read_text())
    choice = written["choices"]["magmax"]
    record = read_tuning_record(out, "split-fmnist", "magmax")
    assert choice["tuning_hash"] == record.digest()
    summary = (shipped / "SUMMARY.md").read_text()
    chosen = ", ".join(f"{k}={v:g}" for k, v in record.choice.items())
    assert f"**{chosen}: {100 * record.score:.1f}**" in summary   # the choice, bold, with its score
    assert summary.count("; ") >= record.evaluated - 1              # every configuration listed
    monkeypatch.setattr(tuned, "load_tuned", lambda b: tuned.TunedFile.model_validate(
        yaml.safe_load((shipped / f"{b}.yaml").read_text())))
    grid = parse_grid({**GRID, "methods": GRID["methods"][:1], "tuned": True})
    runs = expand_grid(grid)
    tuned_runs = [r for r in runs if r.variant == "tuned"]
    assert [r.label for r in tuned_runs] == ["magmax-tuned", "magmax-tuned"]  # two seeds
    assert tuned_runs[0].params["lam"] == choice["params"]["lam"]
    assert tuned_runs[0].base_label == "magmax" and tuned_runs[0].tuning_hash == choice["tuning_hash"]
    with pytest.raises(ConfigError, match="another protocol"):
        expand_grid(grid, cli_overrides={"lr": 1e-2})


def test_tune_benchmarks_limit_tuning_and_the_tuned_rows(monkeypatch):
    """`tune: {benchmarks: [...]}`: rows are tuned (and get a tuned row) only there; a benchmark
    outside the grid is refused naming the grid's."""
    from mergecl.bench.config import tuned
    from mergecl.bench.config.grid_config import expand_grid

    data = {**GRID, "benchmarks": ["split-fmnist", "split-mnist"], "methods": GRID["methods"][:1],
            "tuned": True, "tune": {**GRID["tune"], "benchmarks": ["split-mnist"]}}
    grid = parse_grid(data)
    assert not grid.tune.tunes("split-fmnist") and grid.tune.tunes("split-mnist")
    asked = []

    def no_tuned_file(benchmark):
        asked.append(benchmark)
        return None

    monkeypatch.setattr(tuned, "load_tuned", no_tuned_file)
    with pytest.raises(ConfigError, match="no tuned values for 'magmax' on 'split-mnist'"):
        expand_grid(grid)
    assert asked == ["split-mnist"]  # split-fmnist's rows never look for tuned values
    untuned = expand_grid(parse_grid({**data, "tune": GRID["tune"], "tuned": False}))
    assert [r.benchmark for r in untuned].count("split-fmnist") == 2
    with pytest.raises(ConfigError, match=r"benchmarks \['rotated-mnist'\] are not in the grid; "
                                          r"accepted: split-fmnist, split-mnist"):
        parse_grid({**data, "tune": {"benchmarks": ["rotated-mnist"]}})

"""Adding a method: built-ins, the `mergecl.methods` entry-point group, and --plugins files."""

from __future__ import annotations

import sys
import textwrap

import pytest
from mergecl.methods.base import MergeMethod
from mergecl.methods.registry import (
    BUILTINS,
    UnknownMethodError,
    available,
    get_method,
    load_plugin_file,
)

PLUGIN_SOURCE = textwrap.dedent('''
    from mergecl.methods import merging
    from mergecl.methods.base import MergeMethod, MergeResult, MethodParams


    class HalfWay(MergeMethod):
        name = "{name}"
        paper = "test plugin"

        def merge(self, trained, masks):
            return MergeResult(merging.interpolate(self.start_state, trained, 0.5, masks=masks),
                               {{"merge_coefficient": 0.5}})
''')


@pytest.fixture(autouse=True)
def _isolated_plugin_list(monkeypatch):
    # load_plugin_file appends to $MERGECL_PLUGINS; keep that inside each test
    from mergecl.methods.registry import PLUGINS_ENV

    monkeypatch.setenv(PLUGINS_ENV, "")


def test_every_builtin_imports_and_is_a_merge_method():
    for name in BUILTINS:
        cls = get_method(name)
        assert issubclass(cls, MergeMethod) and cls.name == name
        assert cls.paper, name
        assert cls.__module__.startswith("mergecl.methods.") and (sys.modules[cls.__module__].__doc__ or "").strip()


def test_unknown_method_names_the_accepted_ones():
    with pytest.raises(UnknownMethodError, match="accepted: .*pnm"):
        get_method("no-such-method")


def test_plugin_file_registers_and_runs(tmp_path):
    from mergecl.bench.cli import main

    path = tmp_path / "halfway.py"
    path.write_text(PLUGIN_SOURCE.format(name="halfway-file"))
    assert load_plugin_file(path) == ["halfway-file"]
    assert "halfway-file" in available()
    code = main(["run", "--plugins", str(path), "--method", "halfway-file", "--benchmark", "split-mnist",
                 "--preset", "quick", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    assert (tmp_path / "out" / "split-mnist" / "halfway-file" / "seed0.json").is_file()


def test_a_plugin_method_runs_in_worker_processes(tmp_path):
    """--plugins reaches the pool's worker processes (they inherit $MERGECL_PLUGINS)."""
    import yaml
    from mergecl.bench.cli import main

    path = tmp_path / "halfway.py"
    path.write_text(PLUGIN_SOURCE.format(name="halfway-pool"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"methods": ["halfway-pool"], "benchmarks": ["split-mnist"],
                                    "seeds": [0, 1], "preset": "quick",
                                    "set": {"n_experiences": 2, "trajectories": "off"}}))
    out = tmp_path / "out"
    assert main(["leaderboard", "--plugins", str(path), "--config", str(grid), "--out", str(out),
                 "--workers", "2", "--no-tables", "--quiet"]) == 0
    for seed in (0, 1):
        record = (out / "split-mnist" / "halfway-pool" / f"seed{seed}.json").read_text()
        assert '"status": "ok"' in record


def test_plugin_file_without_a_method_is_refused(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(UnknownMethodError, match="defines no MergeMethod"):
        load_plugin_file(path)


@pytest.mark.e2e
def test_entry_point_method_runs(tmp_path, monkeypatch):
    """A third-party distribution registers a method without touching this repository."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "thirdparty_merge.py").write_text(PLUGIN_SOURCE.format(name="halfway-ep"))
    dist = site / "thirdparty_merge-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-merge\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mergecl.methods]\nhalfway-ep = thirdparty_merge:HalfWay\n")
    monkeypatch.syspath_prepend(str(site))
    assert "halfway-ep" in available()
    from conftest import quick_run

    record = quick_run("halfway-ep")
    assert record.status == "ok"
    assert [t["merge_coefficient"] for t in record.diagnostics["per_task"]] == [0.5] * 5


def test_fusionbench_aliases_resolve_to_methods_with_their_settings():
    from mergecl.bench.config.run_config import resolve_run
    from mergecl.methods.registry import ALIASES, resolve_alias

    assert set(ALIASES) == {"c-ta", "c-ties", "magmax-ind"}
    cfg = resolve_run("c-ties", "split-mnist", 0, "quick")
    assert (cfg.method, cfg.label) == ("ties", "c-ties")
    assert (cfg.params["mode"], cfg.params["lam"], cfg.params["merge_function"]) == ("continual", 0.5, "sum")
    assert resolve_alias("c-ta", {"lam": 0.7}) == ("task-arithmetic", {"lam": 0.7})  # user values win
    assert resolve_run("magmax-ind", "split-mnist", 0, "quick").params["variant"] == "ind"
    assert get_method("c-ta") is get_method("task-arithmetic")
    with pytest.raises(UnknownMethodError, match="aliases: c-ta, c-ties, magmax-ind"):
        get_method("c-tx")

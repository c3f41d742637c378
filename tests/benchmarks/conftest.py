"""Performance benchmarks (``make bench``): ratios against baselines measured in the same run.

The machine is shared and noisy, so no test here compares a time with a constant. Every figure
is a ratio of two things timed in the same test, *interleaved* (the variants take turns within
each round, in rotating order) and summarised by the ratio of the two series' lower quartiles
(``HEADLINE_QUANTILE``), with a bootstrap 95 % interval and the ratio of medians beside it.
Torch runs with 2 intra-op threads. When other processes keep both cores busy, every OpenMP
parallel region may wait for a descheduled thread (libgomp spins by default); the suite records
a contention probe at start and end (``contention_probe``) so that the report says how loaded
the machine was.

What a run leaves behind (read by ``python -m mergecl.bench.reporting.perf_report``):

* ``<perf dir>/perf.json`` -- pytest-benchmark's JSON (``--benchmark-json`` is set to it when
  not given on the command line; written only with ``--benchmark-enable``). Each benchmark is
  one *interleaved round* of its test; the ratios are in its ``extra_info``.
* ``<perf dir>/perf_extra.json`` -- every ratio with its target and status, memory probes,
  profiles, the machine, the command line and the suite's wall time (written whenever a perf
  test ran, with or without ``--benchmark-enable``).

``<perf dir>`` is ``<repo>/results`` unless ``MERGECL_PERF_DIR`` is set.

``MERGECL_PERF_ROUNDS=n`` caps the rounds of the tests that read it (``perf.rounds(default)``:
the training-step tests) -- a smoke check that the suite works, e.g. ``MERGECL_PERF_ROUNDS=2
MERGECL_PERF_DIR=/tmp/perf pytest tests/benchmarks/test_perf_training.py -k step_cost``. The side
file says so (``rounds_cap``) and the report flags such figures as not measurements.

A ratio that misses its target is reported (terminal summary, ``PerfTargetMissed`` warning,
``perf.md``) but does not fail the test: targets can be missed because of code outside the
benchmarks, and the shared machine is noisy. ``MERGECL_PERF_STRICT=1`` turns misses into
failures. Correctness and structural checks (fold == list form, bytes held) always assert.

The tests here run only when ``tests/benchmarks`` (or a file in it) is named on the command
line, or with ``-m perf`` / ``MERGECL_PERF=1``; a plain ``pytest`` / ``pytest tests`` skips
them (the default test command also passes ``--ignore=tests/benchmarks``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from mergecl.bench.orchestration.provenance import git_revision

THREADS = 2
torch.set_num_threads(THREADS)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parents[1]
EXTRA_NAME = "perf_extra.json"
JSON_NAME = "perf.json"


class PerfTargetMissed(Warning):
    """A measured ratio missed its target (a failure only with MERGECL_PERF_STRICT=1)."""


def perf_dir() -> Path:
    return Path(os.environ.get("MERGECL_PERF_DIR") or REPO / "results")


def strict() -> bool:
    return os.environ.get("MERGECL_PERF_STRICT", "").strip().lower() in {"1", "true", "yes"}


def rounds_cap() -> int | None:
    """``MERGECL_PERF_ROUNDS`` as a positive integer, or None (unset or not a positive integer)."""
    text = os.environ.get("MERGECL_PERF_ROUNDS", "").strip()
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def rounds(default: int) -> int:
    """A test's number of rounds: ``default``, capped by ``MERGECL_PERF_ROUNDS`` (smoke checks)."""
    cap = rounds_cap()
    return default if cap is None else max(1, min(default, cap))


# ----------------------------------------------------------------------------- statistics
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-round ratios numerator[i] / denominator[i] (the two were timed in the same round)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired_ratios needs two equally long, non-empty series")
    return [a / b for a, b in zip(numerator, denominator)]


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


#: The headline statistic of a timing series: its lower quartile. Noise on a shared machine is
#: one-sided (other processes only ever add time) and comes in bursts that can hit half the
#: samples of a test; the lower quartile stays on the uncontended samples while up to 75 % are
#: hit, where the median already fails at 50 %. With 3-4 rounds it is the minimum.
HEADLINE_QUANTILE = 0.25


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float],
                  resamples: int = 2000) -> dict[str, Any]:
    """Ratio of the lower quartiles of two interleaved series (the headline), with a bootstrap
    95 % interval (rounds resampled together), the ratio of medians, and the per-round ratios'
    median and spread."""
    ratios = paired_ratios(numerator, denominator)
    n = len(ratios)

    def statistic(num: Sequence[float], den: Sequence[float]) -> float:
        return quantile(num, HEADLINE_QUANTILE) / quantile(den, HEADLINE_QUANTILE)

    headline = statistic(numerator, denominator)
    interval = None
    if n >= 3:
        rng = random.Random(0)
        boot = []
        for _ in range(resamples):
            pick = [rng.randrange(n) for _ in range(n)]
            boot.append(statistic([numerator[i] for i in pick], [denominator[i] for i in pick]))
        boot.sort()
        interval = [boot[int(0.025 * resamples)], boot[int(0.975 * resamples) - 1]]
    return {
        "ratio": headline,
        "ci95": interval,
        "ratio_of_medians": median(numerator) / median(denominator),
        "paired_median": median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "rounds": n,
    }


def interleave(variants: Mapping[str, Callable[[], Any]], rounds: int,
               on_result: Callable[[str, int, Any], None] | None = None,
               offset: int = 0) -> dict[str, list[float]]:
    """Time every variant once per round, in an order that rotates from round to round.

    Returns {name: [seconds of round 0, round 1, ...]}; ``on_result(name, round, value)`` sees
    each call's return value (e.g. to check results agree). ``offset`` shifts the rotation
    (for callers that run one round at a time).
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = (r + offset) % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            value = variants[name]()
            times[name].append(time.perf_counter() - started)
            if on_result is not None:
                on_result(name, r, value)
            del value
    return times


def run_rounds(benchmark: Any, one_round: Callable[[], Any], rounds: int) -> None:
    """Run ``one_round`` ``rounds`` times; under pytest-benchmark (enabled) as its rounds."""
    if getattr(benchmark, "disabled", True):
        for _ in range(rounds):
            one_round()
    else:
        benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)


def interleaved_rounds(benchmark: Any, variants: Mapping[str, Callable[[], Any]], rounds: int,
                       on_result: Callable[[str, int, Any], None] | None = None,
                       ) -> dict[str, list[float]]:
    """:func:`interleave` one round at a time through :func:`run_rounds` (so pytest-benchmark
    sees each interleaved round as one of its rounds), the rotation continuing from round to
    round. Returns {name: [seconds of each round]}."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    round_no = [0]

    def one_round() -> None:
        got = interleave(variants, 1, on_result=on_result, offset=round_no[0])
        round_no[0] += 1
        for name, seconds in got.items():
            times[name].extend(seconds)

    run_rounds(benchmark, one_round, rounds)
    return times


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def contention_probe(reps: int = 40) -> dict[str, float]:
    """How the machine treats a 2-thread parallel region right now.

    Times one small parallel elementwise op (2^18 floats, above ATen's grain size) with 1 and
    with 2 threads. On an idle machine 2 threads take ~0.5-0.7x the 1-thread time; when other
    processes hold the cores, every parallel region can wait for a descheduled OpenMP thread and
    the ratio grows far above 1 -- then variants with many small parallel ops (per-tensor loops)
    are penalised more than variants with few large ones, and ratios shift accordingly.
    """
    x = torch.ones(1 << 18)
    out = torch.empty_like(x)

    def typical(threads: int) -> float:
        torch.set_num_threads(threads)
        for _ in range(5):
            torch.mul(x, 2.0, out=out)
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            torch.mul(x, 2.0, out=out)
            samples.append(time.perf_counter() - started)
        return median(samples)

    try:
        one, two = typical(1), typical(THREADS)
    finally:
        torch.set_num_threads(THREADS)
    return {"op_us_1_thread": round(one * 1e6, 1), "op_us_2_threads": round(two * 1e6, 1),
            "two_over_one": round(two / one, 2), "load_avg": load_average()}


# ----------------------------------------------------------------------------- recorder
class PerfRecorder:
    """Collects the session's measurements; written to ``perf_extra.json`` at the end."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.misses: list[str] = []
        self.started = time.perf_counter()
        self.started_at = _dt.datetime.now(_dt.timezone.utc)
        self.load_at_start = load_average()
        self.contention: dict[str, dict[str, float]] = {}

    def probe_contention(self, when: str) -> None:
        if when not in self.contention:
            self.contention[when] = contention_probe()

    # helpers re-exported for the tests (conftest modules are not imported by name)
    interleave = staticmethod(interleave)
    ratio_summary = staticmethod(ratio_summary)
    quantile = staticmethod(quantile)
    run_rounds = staticmethod(run_rounds)
    interleaved_rounds = staticmethod(interleaved_rounds)
    median = staticmethod(median)
    rounds = staticmethod(rounds)

    def record(self, key: str, title: str, value: float, *, unit: str = "x",
               target: float | None = None, op: str = "<=", baseline: str = "",
               details: Mapping[str, Any] | None = None, note: str = "",
               summary: Mapping[str, Any] | None = None, node: str = "") -> dict[str, Any]:
        """Record one figure; with a target, check it (soft unless MERGECL_PERF_STRICT=1).

        ``summary`` (from :func:`ratio_summary`) adds its 95 % interval to the note and
        "(inconclusive)" when the interval straddles the target.
        """
        if summary is not None:
            if summary.get("ci95"):
                low, high = summary["ci95"]
                prefix = (f"95% CI {low:.3f}-{high:.3f} over {summary['rounds']} rounds; "
                          f"ratio of medians {summary['ratio_of_medians']:.3f}")
                if target is not None and low <= target <= high:
                    prefix += " (inconclusive at this noise)"
            else:
                prefix = (f"{summary['rounds']} rounds, per-round ratios "
                          f"{summary['ratio_min']:.3f}-{summary['ratio_max']:.3f}; ratio of medians "
                          f"{summary['ratio_of_medians']:.3f}")
            note = prefix + (f"; {note}" if note else "")
        if target is None:
            status = "info"
        else:
            ok = value <= target if op == "<=" else value >= target
            status = "pass" if ok else "miss"
        entry = {
            "title": title, "value": float(value), "unit": unit, "target": target,
            "op": op if target is not None else None, "status": status, "baseline": baseline,
            "note": note, "details": dict(details or {}), "summary": dict(summary or {}),
            "test": node,
            "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "load_avg": load_average(),
        }
        self.records[key] = entry
        if status == "miss":
            message = (f"{key}: {title} = {value:.3f}{unit}, target {op} {target}{unit}"
                       + (f" ({note})" if note else ""))
            self.misses.append(message)
            if strict():
                pytest.fail(f"performance target missed: {message}")
            warnings.warn(message, PerfTargetMissed, stacklevel=2)
        return entry

    def as_json(self, exitstatus: int | None) -> dict[str, Any]:
        return {
            "schema": 1,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "suite_seconds": round(time.perf_counter() - self.started, 1),
            "exit_status": exitstatus,
            "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", "pytest",
                                                         *sys.argv[1:]]),
            "strict": strict(),
            "rounds_cap": rounds_cap(),
            "machine": machine_info(),
            "load_avg_start": self.load_at_start,
            "load_avg_end": load_average(),
            "contention": self.contention,
            "records": self.records,
        }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - optional
        memory_gib = None
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (unset)"),
        "platform": platform.platform(),
        "git_rev": git_revision(),
    }


_RECORDER = pytest.StashKey[PerfRecorder]()


# ----------------------------------------------------------------------------- hooks
@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Default ``--benchmark-json`` to ``<perf dir>/perf.json`` (what mergecl.bench.reporting.perf_report reads)."""
    config.stash[_RECORDER] = PerfRecorder()
    if getattr(config.option, "benchmark_json", "missing") is None and _explicitly_requested(config):
        target = perf_dir() / JSON_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = target
        session = getattr(config, "_benchmarksession", None)  # already configured (late load)
        if session is not None and getattr(session, "json", "missing") is None:
            session.json = target


def _explicitly_requested(config: pytest.Config) -> bool:
    if os.environ.get("MERGECL_PERF", "").strip() in {"1", "true", "yes"}:
        return True
    if "perf" in (config.getoption("markexpr", "") or ""):
        return True
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = Path(arg.split("::", 1)[0])
        path = (path if path.is_absolute() else base / path).resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    explicit = _explicitly_requested(config)
    skip = pytest.mark.skip(reason="performance benchmark: run `pytest tests/benchmarks` "
                                   "(or `make bench`)")
    for item in items:
        if BENCH_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.perf)
            if not explicit:
                item.add_marker(skip)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Give the module name ``conftest`` back to ``tests/conftest.py`` once this directory is
    collected: this file is imported as ``conftest`` too (rootdir-less import), and test modules
    collected after it (``from conftest import quick_run``) must find the parent's."""
    current = sys.modules.get("conftest")
    if current is None or Path(getattr(current, "__file__", "") or "").resolve() != Path(__file__).resolve():
        return
    parent_file = (BENCH_DIR.parent / "conftest.py").resolve()
    for plugin in item.config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", "") or "").resolve() == parent_file:
            sys.modules["conftest"] = plugin
            return


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    recorder = session.config.stash.get(_RECORDER, None)
    if recorder is None or not recorder.records:
        return
    recorder.probe_contention("end")
    target = perf_dir() / EXTRA_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(recorder.as_json(int(exitstatus)), indent=2, sort_keys=False) + "\n")
    tmp.replace(target)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    recorder = config.stash.get(_RECORDER, None)
    if recorder is None or not recorder.records:
        return
    tr = terminalreporter
    tr.section("mergecl performance ratios")
    for key, entry in sorted(recorder.records.items()):
        target = "" if entry["target"] is None else f"target {entry['op']} {entry['target']:g}"
        tr.write_line(f"{entry['status'].upper():5s} {key:38s} {entry['value']:10.3f} "
                      f"{entry['unit']:3s} {target}")
    for when, probe in recorder.contention.items():
        tr.write_line(f"contention probe ({when}): 2-thread / 1-thread time of a small parallel op "
                      f"= {probe['two_over_one']:.2f} (idle machine: ~0.5-0.7); load {probe['load_avg']}")
    tr.write_line(f"side file: {perf_dir() / EXTRA_NAME}; report: python -m mergecl.bench.reporting.perf_report")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def perf(request: pytest.FixtureRequest) -> PerfRecorder:
    """The session's :class:`PerfRecorder` (``perf.record(...)``, ``perf.interleave(...)``)."""
    recorder = request.config.stash[_RECORDER]
    recorder.probe_contention("start")
    original = recorder.record
    at_start = contention_probe(reps=20)  # how loaded the machine was when this test began

    def record(*args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("node", request.node.nodeid)
        entry = original(*args, **kwargs)
        entry["contention_at_test_start"] = at_start["two_over_one"]
        return entry

    view = _RecorderView(recorder, record)
    return view  # type: ignore[return-value]


class _RecorderView:
    """The recorder with ``record`` bound to the requesting test's node id."""

    def __init__(self, recorder: PerfRecorder, record: Callable[..., dict[str, Any]]) -> None:
        self._recorder = recorder
        self.record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recorder, name)


@pytest.fixture(autouse=True)
def _two_threads():
    """Every benchmark runs with 2 intra-op threads (a run_one inside may change it)."""
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)

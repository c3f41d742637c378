"""Where a record comes from (mergecl.bench.orchestration.provenance): code revision, library
versions, machine, time and per-run peak memory."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from mergecl.bench.orchestration import provenance


@pytest.fixture
def fresh_caches():
    """The lru-cached lookups computed anew, and the real values cached again afterwards."""
    cached = (provenance.git_revision, provenance.library_versions, provenance.cpu_model)
    for function in cached:
        function.cache_clear()
    yield
    for function in cached:
        function.cache_clear()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_is_the_short_head_marked_dirty_only_by_tracked_changes(fresh_caches):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=provenance.REPOSITORY,
                          capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    revision = provenance.git_revision()
    assert revision in (head.stdout.strip(), head.stdout.strip() + "-dirty")


def test_git_revision_is_none_without_git(fresh_caches, monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.git_revision() is None


def test_library_versions_name_python_and_the_installed_packages(fresh_caches, monkeypatch):
    versions = provenance.library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == version("torch") and versions["avalanche-lib"] == version("avalanche-lib")
    assert set(versions) == {"python", "torch", "avalanche-lib", "timm", "peft", "mergecl"}
    from importlib.metadata import PackageNotFoundError

    def only_python(name):
        raise PackageNotFoundError(name)

    provenance.library_versions.cache_clear()
    monkeypatch.setattr("importlib.metadata.version", only_python)
    assert provenance.library_versions()["peft"] == "not installed"


def test_now_is_utc_to_the_second_and_cpus_is_the_cpu_count():
    stamp = dt.datetime.fromisoformat(provenance.now())
    assert stamp.utcoffset() == dt.timedelta(0) and stamp.microsecond == 0
    assert abs((dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()) < 5
    assert provenance.cpus() == os.cpu_count()
    assert isinstance(provenance.cpu_model(), str) and provenance.cpu_model()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_rss_is_per_run_not_the_worker_high_water_mark() -> None:
    """A pool worker runs many runs: each record's peak RSS starts from a fresh window."""
    import numpy as np
    from mergecl.bench.orchestration.provenance import peak_rss_mb, reset_peak_rss

    assert reset_peak_rss()
    before = peak_rss_mb()
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
    during = peak_rss_mb()
    del block
    assert during - before > 200, (before, during)
    assert reset_peak_rss()
    assert peak_rss_mb() < during - 200  # the next run does not inherit the 256 MiB peak


def test_repository_link_is_relative_inside_the_repository_and_none_outside(tmp_path) -> None:
    from mergecl.bench.orchestration.provenance import REPOSITORY, repository_link

    target = REPOSITORY / "bench" / "config" / "tuned" / "SUMMARY.md"
    assert repository_link(target, REPOSITORY / "results") == "../bench/config/tuned/SUMMARY.md"
    assert repository_link(target, REPOSITORY / "results" / "paper") == "../../bench/config/tuned/SUMMARY.md"
    assert repository_link(target, tmp_path) is None  # a page elsewhere: no ../../ through the machine
    assert repository_link(tmp_path / "x.md", REPOSITORY / "results") is None

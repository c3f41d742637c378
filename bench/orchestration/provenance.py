"""Where a record comes from: code revision, library versions, machine, time, memory."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
from functools import lru_cache
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def repository_link(target: Path, page_dir: Path) -> str | None:
    """The relative link from a page written in ``page_dir`` to ``target``, a file of this
    repository; None when the page is outside the repository (a link from there would climb
    through the machine's folders). A caller then names the file by its repository path."""
    page, file = Path(page_dir).resolve(), Path(target).resolve()
    try:
        page.relative_to(REPOSITORY)
        file.relative_to(REPOSITORY)
    except ValueError:
        return None
    return Path(os.path.relpath(file, page)).as_posix()


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The repository's short revision, "-dirty" when tracked code or config differs from HEAD
    (the result store, results/, does not count: a leaderboard writes there while it runs)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)results"], cwd=REPOSITORY,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("torch", "avalanche-lib", "timm", "peft", "mergecl"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def now() -> str:
    """The current UTC time, ISO-8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def cpus() -> int | None:
    return os.cpu_count()


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process (Linux: ``5`` → ``/proc/self/clear_refs``
    resets ``VmHWM`` to the current RSS). Pool workers run many runs; without the reset every
    record would carry the worker's high-water mark so far. False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB since the last :func:`reset_peak_rss`
    (``VmHWM``), or over its lifetime (``ru_maxrss``) where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

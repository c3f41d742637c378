"""mergecl's on-disk caches — where they live, and writing a tensor file atomically.

Three caches, each a directory that may be deleted at any time (everything in it is recomputed):

* ``data`` — prepared MNIST / Fashion-MNIST files and resized tensors
  (``$MERGECL_CACHE``, default ``~/.cache/mergecl/data``; ``bench/streams/datasets.py``);
* ``features`` — outputs of a frozen backbone prefix, by content
  (``$MERGECL_FEATURES``, default ``~/.cache/mergecl/features``; ``bench/training/features.py``);
* ``trajectories`` — trained states θ*_t shared between runs
  (``$MERGECL_TRAJECTORIES``, default ``~/.cache/mergecl/trajectories``;
  ``bench/training/trajectories.py``).

A file is written to a temporary name in the same directory, flushed, fsync'ed and renamed
into place, so a reader (another worker, a later run) sees the whole file or none of it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = {"data": "MERGECL_CACHE", "features": "MERGECL_FEATURES",
             "trajectories": "MERGECL_TRAJECTORIES"}


def cache_dir(kind: str) -> Path:
    """The directory of cache ``kind`` (``data``, ``features``, ``trajectories``), read at call time."""
    if kind not in CACHE_ENV:
        raise ValueError(f"unknown cache {kind!r}; accepted: {', '.join(CACHE_ENV)}")
    env = os.environ.get(CACHE_ENV[kind])
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mergecl" / kind


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file, fsync, rename)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def directory_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path`` (0, 0 when absent)."""
    if not path.is_dir():
        return 0, 0
    total = count = 0
    for entry in path.rglob("*"):
        if entry.is_file():
            total += entry.stat().st_size
            count += 1
    return total, count

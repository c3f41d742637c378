"""Shared fixtures: ``no_network`` and a prepared, offline ``data_root``."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# shared test helpers (fake runs, tiny continual problems, the golden quick grid)
sys.path.insert(0, str(Path(__file__).with_name("helpers")))


class NetworkBlockedError(RuntimeError):
    """Raised by any socket connect while network access is blocked in a test."""


def _block_network(mp: pytest.MonkeyPatch) -> list:
    attempts: list = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def _refuse(address):
        attempts.append(address)
        raise NetworkBlockedError(f"network access blocked in tests (connect to {address!r})")

    def connect(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        _refuse(address)

    def connect_ex(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect_ex(self, address)
        _refuse(address)

    def create_connection(address, *args, **kwargs):
        _refuse(address)

    mp.setattr(socket.socket, "connect", connect)
    mp.setattr(socket.socket, "connect_ex", connect_ex)
    mp.setattr(socket, "create_connection", create_connection)
    return attempts


@pytest.fixture
def no_network(monkeypatch):
    """Make every non-Unix socket connect raise ``NetworkBlockedError``.

    The fixture value is the list of attempted addresses (empty if nothing tried)."""
    return _block_network(monkeypatch)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A torchvision-layout root with MNIST (and Fashion-MNIST when its package is
    installed) prepared from installed packages, with the network blocked."""
    from mergecl.bench.streams.datasets import prepare_all

    root = tmp_path_factory.mktemp("mergecl-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MERGECL_DATA", raising=False)
        _block_network(mp)
        status = prepare_all(cache_dir=root)
    if not status["mnist"]["ok"]:
        pytest.fail(status["mnist"]["error"])
    return root


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session prepares data into its own cache (never the user's)."""
    cache = tmp_path_factory.mktemp("mergecl-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERGECL_CACHE", str(cache))
        mp.setenv("MERGECL_FEATURES", str(tmp_path_factory.mktemp("mergecl-features")))
        mp.setenv("MERGECL_TRAJECTORIES", str(tmp_path_factory.mktemp("mergecl-trajectories")))
        mp.delenv("MERGECL_DATA", raising=False)
        yield cache


def quick_run(method: str, benchmark: str = "split-mnist", seed: int = 0, **overrides):
    """Run one quick-preset run in-process and return its record."""
    from mergecl.bench.config.run_config import resolve_run
    from mergecl.bench.training.run import run_one

    return run_one(resolve_run(method, benchmark, seed, "quick", overrides))

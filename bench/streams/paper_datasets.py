"""Paper-scale class-incremental datasets read from a root the user provides.

Nothing here downloads anything. Each dataset is looked for under ``<root>`` in the layout
its public distribution unpacks to (see :data:`PAPER_DATASETS`); a missing or malformed copy
is refused by :func:`check_root` with a :class:`DatasetLayoutError` that names the expected
layout and the directory that was inspected, before any model is built or trained.

Protocol choices (the same for every method, recorded here because papers differ):

* **Class order.** ``numpy.random.RandomState(seed).permutation(n_classes)`` over the dataset's
  class ids (folder names / label ids sorted), with ``seed`` the run seed. Many CL codebases
  instead fix one order (often drawn with seed 1993); ours varies with the seed, like the
  offline benchmarks in :mod:`mergecl.bench.streams.benchmarks`.
* **Labels the model sees.** The stream is built with Avalanche's ``nc_benchmark(...,
  class_ids_from_zero_from_first_exp=True)``: dataset class ``class_order[j]`` becomes label
  ``j``, so experience ``i`` holds labels ``i*k … (i+1)*k-1``. :attr:`PaperBenchmark.
  classes_per_experience` is in that label space (it equals each experience's
  ``classes_in_this_experience``); ``original_classes_per_experience`` and ``class_names`` map
  back to the dataset.
* **ImageNet-R / ImageNet-A split.** Neither ships a train/test split. CL papers on ImageNet-R
  use a random 80/20 split per class; many codebases ship their own fixed file lists, which
  we do not have. mergecl draws a seeded split: for each class, the files (sorted by name)
  are permuted with ``numpy.random.default_rng([split_seed, crc32(class_name)])`` and the
  first ``round(0.8 n)`` (at least 1, at most n-1) go to training. ``split_seed`` defaults to 0
  and is *independent of the run seed*, so every seed and every method is evaluated on the
  same test images; a class's split depends only on its own name and files. Numbers are
  therefore not image-for-image comparable with a codebase that ships a fixed split.
* **CUB-200-2011.** The official ``train_test_split.txt``.
* **CIFAR-100.** The official train/test pickles, held as a uint8 tensor dataset.
* **DomainNet ("DN*-5" in the P&M table).** Class-incremental over the union of all domains'
  images: the 345 classes are split into tasks (5 × 69 by default) and a task holds its
  classes' images from every domain present; the official ``<domain>_train.txt`` /
  ``<domain>_test.txt`` lists define the split. Domain identity is not used. The P&M paper's
  exact DN* subset/protocol is not documented in docs/methods.md; this is our choice.

Images are loaded lazily with PIL (converted to RGB) and transformed by Avalanche's transform
groups; the default transform (train and eval) is a square resize to ``image_size`` and a
conversion to a float tensor in [0, 1]. There is deliberately **no normalisation**: the model
wrapper applies the backbone's own mean/std. Custom ``train_transform`` / ``eval_transform``
receive a PIL image (folder datasets) or a uint8 ``3×32×32`` tensor (CIFAR-100).

Class counts always come from the data; the spec's ``n_classes`` (the real dataset's count)
is only used to warn (:class:`DatasetSizeWarning`) when a copy differs, e.g. a subset.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DatasetLayoutError",
    "DatasetSizeWarning",
    "PaperDatasetSpec",
    "PAPER_DATASETS",
    "IMAGE_EXTENSIONS",
    "DOMAINNET_DOMAINS",
    "PaperBenchmark",
    "ImageListDataset",
    "TensorImageDataset",
    "check_root",
    "build_paper_benchmark",
    "default_transform",
    "seeded_split",
    "valid_n_experiences",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})
DOMAINNET_DOMAINS: tuple[str, ...] = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
TRAIN_FRACTION = 0.8
_CHECK_FILES_PER_LIST = 5  # DomainNet: referenced files whose existence check_root verifies per list


class DatasetLayoutError(ValueError):
    """A dataset root is missing or does not have the layout the loader expects."""


class DatasetSizeWarning(UserWarning):
    """The copy found has a different number of classes than the real dataset."""


@dataclass(frozen=True)
class PaperDatasetSpec:
    """Where a dataset lives under ``<root>`` and what the real one looks like."""

    name: str
    title: str
    subdir: str
    layout: str
    split: str
    default_n_experiences: int
    n_classes: int
    """Class count of the real dataset — used only for a warning; counts come from the data."""


PAPER_DATASETS: dict[str, PaperDatasetSpec] = {
    spec.name: spec
    for spec in [
        PaperDatasetSpec(
            "imagenet-r", "ImageNet-R", "imagenet-r",
            "<root>/imagenet-r/<wnid>/*.jpg class folders",
            f"seeded {TRAIN_FRACTION:.0%}/{1 - TRAIN_FRACTION:.0%} split per class (split_seed, default 0)",
            10, 200),
        PaperDatasetSpec(
            "imagenet-a", "ImageNet-A", "imagenet-a",
            "<root>/imagenet-a/<wnid>/*.jpg class folders",
            f"seeded {TRAIN_FRACTION:.0%}/{1 - TRAIN_FRACTION:.0%} split per class (split_seed, default 0); "
            "many CL codebases ship a fixed split instead",
            10, 200),
        PaperDatasetSpec(
            "cub200", "CUB-200-2011", "CUB_200_2011",
            "<root>/CUB_200_2011/{images/<class_dir>/*.jpg, images.txt, image_class_labels.txt, "
            "train_test_split.txt, classes.txt}",
            "official train_test_split.txt",
            10, 200),
        PaperDatasetSpec(
            "cifar100", "CIFAR-100", "cifar-100-python",
            "<root>/cifar-100-python/{train,test,meta} pickles (b'data' uint8 Nx3072, b'fine_labels'; "
            "meta b'fine_label_names')",
            "official train/test files",
            10, 100),
        PaperDatasetSpec(
            "domainnet", "DomainNet", "domainnet",
            "<root>/domainnet/<domain>/<class>/*.jpg with split lists <root>/domainnet/<domain>_train.txt "
            "and <domain>_test.txt (lines 'domain/class/file.jpg label'), domains "
            + ", ".join(DOMAINNET_DOMAINS),
            "official <domain>_train/_test lists, class-incremental over all domains' images",
            5, 345),
    ]
}


# --------------------------------------------------------------------------------------------
# datasets


def default_transform(image_size: int) -> Callable[[Any], torch.Tensor]:
    """Square resize to ``image_size`` and a float tensor in [0, 1] (no normalisation).

    Accepts a PIL image or a uint8 ``C×H×W`` tensor.
    """
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.ToPureTensor(),
    ])


def _load_rgb(path: str):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(f"cannot read image {path}: {exc}") from None


class ImageListDataset(Dataset):
    """Image files loaded lazily with PIL; ``targets`` are dataset class ids."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int]):
        if len(paths) != len(targets):
            raise ValueError("paths and targets must have the same length")
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return _load_rgb(self.paths[index]), self.targets[index]


class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 ``N×C×H×W`` tensor (CIFAR-100)."""

    def __init__(self, data: torch.Tensor, targets: Sequence[int]):
        if data.ndim != 4 or len(data) != len(targets):
            raise ValueError("data must be N×C×H×W with one target per image")
        self.data = data
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.data[index], self.targets[index]


# --------------------------------------------------------------------------------------------
# scanning / validation


@dataclass
class _Scanned:
    directory: Path
    class_names: list[str]
    train: Dataset
    test: Dataset
    info: dict[str, Any] = field(default_factory=dict)


def _spec(name: str) -> PaperDatasetSpec:
    if name not in PAPER_DATASETS:
        raise ValueError(f"unknown paper dataset {name!r}; accepted: {', '.join(PAPER_DATASETS)}")
    return PAPER_DATASETS[name]


def _fail(spec: PaperDatasetSpec, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{spec.title}: expected {spec.layout}; {problem}")


def _dataset_dir(spec: PaperDatasetSpec, root: str | os.PathLike) -> Path:
    """``<root>/<subdir>``; a root that *is* the dataset folder is accepted too."""
    if root is None or str(root) == "":
        raise _fail(spec, "no data root was given (pass --data-root / data_root=...)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _fail(spec, f"the data root {root} does not exist or is not a directory")
    directory = root / spec.subdir
    if directory.is_dir():
        return directory
    if root.name == spec.subdir:
        return root
    raise _fail(spec, f"found no {spec.subdir}/ directory in {root}")


def _sorted_entries(directory: Path) -> list[os.DirEntry]:
    with os.scandir(directory) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_class_folders(spec: PaperDatasetSpec, directory: Path) -> tuple[list[str], list[list[str]]]:
    classes = [e for e in _sorted_entries(directory) if e.is_dir()]
    if not classes:
        raise _fail(spec, f"found no class folders in {directory}")
    names, files = [], []
    empty, single = [], []
    for entry in classes:
        images = [e.path for e in _sorted_entries(Path(entry.path)) if e.is_file() and _is_image(e.name)]
        if not images:
            empty.append(entry.name)
        elif len(images) < 2:
            single.append(entry.name)
        names.append(entry.name)
        files.append(images)
    if empty:
        raise _fail(spec, f"{len(empty)} class folder(s) in {directory} hold no images "
                          f"({', '.join(sorted(IMAGE_EXTENSIONS))}): {_few(empty)}")
    if single:
        raise _fail(spec, f"{len(single)} class folder(s) in {directory} hold a single image, too few for "
                          f"a train/test split: {_few(single)}")
    return names, files


def _few(items: Sequence[Any], k: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:k])
    return shown + (f", … ({len(items) - k} more)" if len(items) > k else "")


def seeded_split(class_name: str, n: int, split_seed: int = 0,
                 train_fraction: float = TRAIN_FRACTION) -> tuple[list[int], list[int]]:
    """Train and test indices (sorted) of a class's ``n`` files (sorted by name).

    Deterministic in (``split_seed``, ``class_name``, ``n``); at least one file on each side.
    """
    if n < 2:
        raise ValueError(f"class {class_name!r} has {n} file(s); a split needs at least 2")
    rng = np.random.default_rng([int(split_seed), zlib.crc32(class_name.encode("utf-8"))])
    perm = rng.permutation(n)
    n_train = int(np.floor(train_fraction * n + 0.5))
    n_train = min(max(n_train, 1), n - 1)
    return sorted(perm[:n_train].tolist()), sorted(perm[n_train:].tolist())


def _scan_folder_split(spec: PaperDatasetSpec, directory: Path, split_seed: int) -> _Scanned:
    names, files = _scan_class_folders(spec, directory)
    tr_paths, tr_y, te_paths, te_y = [], [], [], []
    for cls, (name, paths) in enumerate(zip(names, files)):
        train_idx, test_idx = seeded_split(name, len(paths), split_seed)
        tr_paths += [paths[i] for i in train_idx]
        tr_y += [cls] * len(train_idx)
        te_paths += [paths[i] for i in test_idx]
        te_y += [cls] * len(test_idx)
    return _Scanned(directory, names, ImageListDataset(tr_paths, tr_y), ImageListDataset(te_paths, te_y),
                    {"split": f"seeded {TRAIN_FRACTION:.0%}/{1 - TRAIN_FRACTION:.0%} per class",
                     "split_seed": int(split_seed)})


def _read_table(spec: PaperDatasetSpec, path: Path, n_fields: int) -> list[list[str]]:
    if not path.is_file():
        raise _fail(spec, f"missing {path.name} (looked for {path})")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=n_fields - 1)
            if len(parts) != n_fields:
                raise _fail(spec, f"{path}:{lineno}: expected {n_fields} fields, got {line!r}")
            rows.append(parts)
    if not rows:
        raise _fail(spec, f"{path} is empty")
    return rows


def _as_int(spec: PaperDatasetSpec, value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _fail(spec, f"{where}: {value!r} is not an integer") from None


def _contiguous(spec: PaperDatasetSpec, train_y: Sequence[int], test_y: Sequence[int],
                where: Path) -> dict[int, int]:
    """Map the label ids used by the data to 0..n-1 (sorted); train and test must agree."""
    train_set, test_set = set(train_y), set(test_y)
    if train_set != test_set:
        only_train = sorted(train_set - test_set)
        only_test = sorted(test_set - train_set)
        raise _fail(spec, f"train and test classes differ in {where} (only in train: {_few(only_train)}; "
                          f"only in test: {_few(only_test)})")
    return {label: i for i, label in enumerate(sorted(train_set))}


def _scan_cub(spec: PaperDatasetSpec, directory: Path) -> _Scanned:
    images_dir = directory / "images"
    if not images_dir.is_dir():
        raise _fail(spec, f"missing images/ folder (looked for {images_dir})")
    images = {_as_int(spec, i, "images.txt"): p for i, p in _read_table(spec, directory / "images.txt", 2)}
    labels = {_as_int(spec, i, "image_class_labels.txt"): _as_int(spec, c, "image_class_labels.txt")
              for i, c in _read_table(spec, directory / "image_class_labels.txt", 2)}
    is_train = {_as_int(spec, i, "train_test_split.txt"): _as_int(spec, t, "train_test_split.txt")
                for i, t in _read_table(spec, directory / "train_test_split.txt", 2)}
    class_names = {_as_int(spec, c, "classes.txt"): n
                   for c, n in _read_table(spec, directory / "classes.txt", 2)}
    ids = set(images)
    for fname, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        if set(table) != ids:
            missing, extra = sorted(ids - set(table)), sorted(set(table) - ids)
            raise _fail(spec, f"{fname} and images.txt in {directory} list different image ids "
                              f"(missing: {_few(missing)}; extra: {_few(extra)})")
    bad_flags = sorted(i for i, t in is_train.items() if t not in (0, 1))
    if bad_flags:
        raise _fail(spec, f"train_test_split.txt flags must be 0 or 1 (image ids {_few(bad_flags)})")
    unknown = sorted({c for c in labels.values() if c not in class_names})
    if unknown:
        raise _fail(spec, f"image_class_labels.txt uses class ids missing from classes.txt: {_few(unknown)}")
    missing_files = [images[i] for i in sorted(ids) if not (images_dir / images[i]).is_file()]
    if missing_files:
        raise _fail(spec, f"{len(missing_files)} image(s) listed in images.txt are missing under "
                          f"{images_dir}: {_few(missing_files)}")
    order = sorted(ids)
    train_ids = [i for i in order if is_train[i] == 1]
    test_ids = [i for i in order if is_train[i] == 0]
    remap = _contiguous(spec, [labels[i] for i in train_ids], [labels[i] for i in test_ids], directory)
    names = [class_names[label] for label in sorted(remap)]

    def part(ids_: list[int]) -> ImageListDataset:
        return ImageListDataset([str(images_dir / images[i]) for i in ids_], [remap[labels[i]] for i in ids_])

    return _Scanned(directory, names, part(train_ids), part(test_ids), {"split": "official"})


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only — a user's file never runs code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(spec: PaperDatasetSpec, path: Path) -> dict[bytes, Any]:
    if not path.is_file():
        raise _fail(spec, f"missing pickle {path.name} (looked for {path})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core alias in old pickles
            data = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:  # any failure to unpickle is a malformed file
        raise _fail(spec, f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise _fail(spec, f"{path} holds a {type(data).__name__}, not a dict")
    return {k.encode() if isinstance(k, str) else k: v for k, v in data.items()}


def _scan_cifar(spec: PaperDatasetSpec, directory: Path) -> _Scanned:
    meta = _unpickle(spec, directory / "meta")
    label_names = meta.get(b"fine_label_names")
    if not isinstance(label_names, (list, tuple)) or not label_names:
        raise _fail(spec, f"{directory / 'meta'} has no b'fine_label_names' list")
    label_names = [n.decode() if isinstance(n, bytes) else str(n) for n in label_names]
    parts = {}
    for split in ("train", "test"):
        path = directory / split
        blob = _unpickle(spec, path)
        x, y = blob.get(b"data"), blob.get(b"fine_labels")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
            shape = getattr(x, "shape", None)
            raise _fail(spec, f"{path}: b'data' must be a uint8 array N×3072 (got {type(x).__name__} {shape})")
        if not isinstance(y, (list, tuple, np.ndarray)) or len(y) != len(x) or len(x) == 0:
            raise _fail(spec, f"{path}: b'fine_labels' must list one label per row of b'data'")
        y = [int(v) for v in y]
        if min(y) < 0 or max(y) >= len(label_names):
            raise _fail(spec, f"{path}: labels must be in 0..{len(label_names) - 1} (meta names)")
        parts[split] = (x, y)
    remap = _contiguous(spec, parts["train"][1], parts["test"][1], directory)
    names = [label_names[label] for label in sorted(remap)]

    def part(split: str) -> TensorImageDataset:
        x, y = parts[split]
        data = torch.from_numpy(np.ascontiguousarray(x).reshape(-1, 3, 32, 32))
        return TensorImageDataset(data, [remap[v] for v in y])

    return _Scanned(directory, names, part("train"), part("test"), {"split": "official"})


def _scan_domainnet(spec: PaperDatasetSpec, directory: Path) -> _Scanned:
    present = []
    for domain in DOMAINNET_DOMAINS:
        has_dir = (directory / domain).is_dir()
        lists = [(directory / f"{domain}_{s}.txt").is_file() for s in ("train", "test")]
        if any(lists) or has_dir:
            for split, ok in zip(("train", "test"), lists):
                if not ok:
                    raise _fail(spec, f"domain {domain!r} is missing its split list "
                                      f"{directory / f'{domain}_{split}.txt'}")
            if not has_dir:
                raise _fail(spec, f"domain {domain!r} has split lists but no image folder {directory / domain}")
            present.append(domain)
    if not present:
        raise _fail(spec, f"found no domain split lists (<domain>_train.txt) in {directory}")
    if len(present) < len(DOMAINNET_DOMAINS):
        warnings.warn(f"DomainNet: only domains {present} found in {directory} "
                      f"(the real dataset has {len(DOMAINNET_DOMAINS)})", DatasetSizeWarning, stacklevel=3)
    label_to_class: dict[int, str] = {}
    split_rows: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for domain in present:
        for split in ("train", "test"):
            path = directory / f"{domain}_{split}.txt"
            rows = _read_table(spec, path, 2)
            paths, ys = split_rows[split]
            for lineno, (rel, label_text) in enumerate(rows, 1):
                label = _as_int(spec, label_text, f"{path}:{lineno}")
                pieces = rel.split("/")
                if len(pieces) < 3 or pieces[0] != domain or label < 0:
                    raise _fail(spec, f"{path}:{lineno}: expected '{domain}/<class>/<file> <label>', got "
                                      f"{rel!r} {label_text!r}")
                known = label_to_class.setdefault(label, pieces[1])
                if known != pieces[1]:
                    raise _fail(spec, f"{path}:{lineno}: label {label} is class {pieces[1]!r} here but "
                                      f"{known!r} elsewhere")
                paths.append(str(directory / rel))
                ys.append(label)
            missing = [p for p in split_rows[split][0][-len(rows):][:_CHECK_FILES_PER_LIST]
                       if not os.path.isfile(p)]
            if missing:
                raise _fail(spec, f"files listed in {path} are missing: {_few(missing)}")
    remap = _contiguous(spec, split_rows["train"][1], split_rows["test"][1], directory)
    names = [label_to_class[label] for label in sorted(remap)]

    def part(split: str) -> ImageListDataset:
        paths, ys = split_rows[split]
        return ImageListDataset(paths, [remap[y] for y in ys])

    return _Scanned(directory, names, part("train"), part("test"),
                    {"split": "official lists", "domains": present})


def _scan(name: str, root: str | os.PathLike, split_seed: int = 0) -> _Scanned:
    spec = _spec(name)
    directory = _dataset_dir(spec, root)
    if name in ("imagenet-r", "imagenet-a"):
        scanned = _scan_folder_split(spec, directory, split_seed)
    elif name == "cub200":
        scanned = _scan_cub(spec, directory)
    elif name == "cifar100":
        scanned = _scan_cifar(spec, directory)
    else:
        scanned = _scan_domainnet(spec, directory)
    n = len(scanned.class_names)
    if n != spec.n_classes:
        warnings.warn(f"{spec.title}: found {n} classes in {directory}; the real dataset has {spec.n_classes}",
                      DatasetSizeWarning, stacklevel=3)
    return scanned


def check_root(name: str, root: str | os.PathLike) -> Path:
    """Validate ``<root>`` for dataset ``name`` and return the dataset's directory.

    Raises :class:`DatasetLayoutError` (naming the expected layout and where it looked) for a
    missing root, missing folder/files, empty class folders, inconsistent lists or an
    unreadable pickle. For DomainNet, the existence of the first few files of each split list
    is checked (not all ~600k); any other missing file fails when it is first loaded.
    """
    return _scan(name, root).directory


# --------------------------------------------------------------------------------------------
# benchmark


@dataclass
class PaperBenchmark:
    """A class-incremental Avalanche scenario built from a paper dataset."""

    name: str
    benchmark: Any
    """The Avalanche scenario (``.train_stream`` / ``.test_stream``)."""
    class_order: list[int]
    """Dataset class ids in presentation order; model label ``j`` is dataset class ``class_order[j]``."""
    classes_per_experience: list[list[int]]
    """Model labels per experience (``[[0..k-1], [k..2k-1], …]``), as Avalanche reports them."""
    n_classes: int
    scenario: str = "class-incremental"
    original_classes_per_experience: list[list[int]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    """Names of dataset class ids (index = dataset class id)."""
    info: dict[str, Any] = field(default_factory=dict)
    train_dataset: Dataset | None = None
    """The whole training set before Avalanche (targets = dataset class ids, untransformed)."""
    test_dataset: Dataset | None = None

    @property
    def n_experiences(self) -> int:
        return len(self.classes_per_experience)


def valid_n_experiences(n_classes: int) -> list[int]:
    return [d for d in range(1, n_classes + 1) if n_classes % d == 0]


def build_paper_benchmark(
    name: str,
    root: str | os.PathLike,
    n_experiences: int,
    seed: int,
    image_size: int = 224,
    train_transform: Callable | None = None,
    eval_transform: Callable | None = None,
    *,
    split_seed: int = 0,
) -> PaperBenchmark:
    """Build the class-incremental stream of dataset ``name`` found under ``root``.

    ``n_experiences`` must divide the number of classes found (ValueError naming the valid
    values otherwise). ``seed`` draws the class order; ``split_seed`` the ImageNet-R/-A
    train/test split (fixed by default). Transforms default to :func:`default_transform`.
    """
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, (int, np.integer)) or n_experiences < 1:
        raise ValueError(f"n_experiences must be a positive integer (got {n_experiences!r})")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be positive (got {image_size!r})")
    scanned = _scan(name, root, split_seed)
    n_classes = len(scanned.class_names)
    n_experiences = int(n_experiences)
    if n_classes % n_experiences:
        raise ValueError(f"{PAPER_DATASETS[name].title}: n_experiences={n_experiences} does not divide the "
                         f"{n_classes} classes found; valid values: {valid_n_experiences(n_classes)}")
    order = [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]
    per_exp = n_classes // n_experiences

    from avalanche.benchmarks import nc_benchmark

    scenario = nc_benchmark(
        scanned.train, scanned.test, n_experiences, task_labels=False, seed=seed,
        fixed_class_order=order, class_ids_from_zero_from_first_exp=True,
        train_transform=train_transform or default_transform(int(image_size)),
        eval_transform=eval_transform or default_transform(int(image_size)),
    )
    return PaperBenchmark(
        name=name,
        benchmark=scenario,
        class_order=order,
        classes_per_experience=[list(range(i * per_exp, (i + 1) * per_exp)) for i in range(n_experiences)],
        n_classes=n_classes,
        original_classes_per_experience=[order[i * per_exp:(i + 1) * per_exp] for i in range(n_experiences)],
        class_names=list(scanned.class_names),
        info={"root": str(scanned.directory), "image_size": int(image_size), **scanned.info},
        train_dataset=scanned.train,
        test_dataset=scanned.test,
    )

"""Paper datasets on tiny synthetic stand-ins written in the real layouts."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mergecl.bench.streams.paper_datasets import (
    PAPER_DATASETS,
    DatasetLayoutError,
    DatasetSizeWarning,
    build_paper_benchmark,
    check_root,
    seeded_split,
)
from PIL import Image

SIZE = 16  # image_size used in the tests (sources are 8×8)


# ------------------------------------------------------------------------- stand-in writers


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = (value % 256, (3 * value) % 256, (7 * value) % 256)
    Image.new("RGB", (8, 8), rgb).save(path)


def write_folder_dataset(root: Path, subdir: str, n_classes: int, per_class: int, ext: str = "jpg") -> Path:
    for c in range(n_classes):
        for i in range(per_class):
            _image(root / subdir / f"n{c:08d}" / f"img_{i}.{ext}", 40 * c + 2 * i)  # red encodes the class
    (root / subdir / "README.txt").write_text("not a class folder")
    return root


def write_cub(root: Path, n_classes: int = 4, per_class: int = 4) -> Path:
    base = root / "CUB_200_2011"
    images, labels, split, classes = [], [], [], []
    image_id = 1
    for c in range(1, n_classes + 1):
        cls_dir = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cls_dir}")
        for i in range(per_class):
            rel = f"{cls_dir}/Bird_{c}_{i}.jpg"
            _image(base / "images" / rel, image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {1 if i < per_class - 1 else 0}")  # last image of a class: test
            image_id += 1
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", classes)):
        (base / name).write_text("\n".join(lines) + "\n")
    return root


def write_cifar(root: Path, labels_used=(0, 5, 7, 99), train_per=4, test_per=2, protocol=2) -> Path:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for split, per in (("train", train_per), ("test", test_per)):
        y = [lab for lab in labels_used for _ in range(per)]
        x = np.stack([np.full(3072, (lab * 2 + i) % 256, dtype=np.uint8) for i, lab in enumerate(y)])
        with open(base / split, "wb") as fh:
            pickle.dump({b"data": x, b"fine_labels": y, b"filenames": [b"f"] * len(y)}, fh, protocol=protocol)
    with open(base / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"class_{i}".encode() for i in range(100)]}, fh, protocol=protocol)
    return root


def write_domainnet(root: Path, domains=("clipart", "sketch"), n_classes=4, per_split=2) -> Path:
    base = root / "domainnet"
    for domain in domains:
        for split in ("train", "test"):
            lines = []
            for c in range(n_classes):
                for i in range(per_split):
                    rel = f"{domain}/class_{c}/{domain}_{split}_{c}_{i}.jpg"
                    _image(base / rel, c * 10 + i)
                    lines.append(f"{rel} {c}")
            (base / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _build(name, root, n_experiences=2, seed=0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetSizeWarning)
        return build_paper_benchmark(name, root, n_experiences, seed, image_size=SIZE, **kw)


def _check_stream(pb, n_train: int, n_test: int) -> None:
    bm = pb.benchmark
    assert len(bm.train_stream) == len(bm.test_stream) == pb.n_experiences == 2
    assert sum(len(e.dataset) for e in bm.train_stream) == n_train
    assert sum(len(e.dataset) for e in bm.test_stream) == n_test
    for i, (tr, te) in enumerate(zip(bm.train_stream, bm.test_stream)):
        assert sorted(tr.classes_in_this_experience) == pb.classes_per_experience[i]
        assert set(te.classes_in_this_experience) == set(pb.classes_per_experience[i])
    assert sorted(pb.class_order) == list(range(pb.n_classes))
    half = pb.n_classes // 2
    assert pb.original_classes_per_experience == [pb.class_order[:half], pb.class_order[half:]]
    assert len(pb.train_dataset) == n_train and len(pb.test_dataset) == n_test
    x, y, *_ = bm.train_stream[0].dataset[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y in pb.classes_per_experience[0]
    xt, *_ = bm.test_stream[1].dataset[0]
    assert xt.shape == (3, SIZE, SIZE)
    assert pb.scenario == "class-incremental"


# ------------------------------------------------------------------------------ building


def test_spec_registry_matches_benchmark_names():
    assert set(PAPER_DATASETS) == {"imagenet-r", "imagenet-a", "cub200", "cifar100", "domainnet"}
    assert {n: s.n_classes for n, s in PAPER_DATASETS.items()} == {
        "imagenet-r": 200, "imagenet-a": 200, "cub200": 200, "cifar100": 100, "domainnet": 345}
    assert PAPER_DATASETS["domainnet"].default_n_experiences == 5


def test_imagenet_r_counts_order_and_labels(tmp_path):
    root = write_folder_dataset(tmp_path, "imagenet-r", n_classes=4, per_class=5)
    pb = _build("imagenet-r", root, seed=3)
    _check_stream(pb, n_train=16, n_test=4)  # 80/20 of 5 = 4/1 per class
    assert pb.n_classes == 4 and pb.class_names == [f"n{c:08d}" for c in range(4)]
    assert pb.class_order == np.random.RandomState(3).permutation(4).tolist()
    assert pb.original_classes_per_experience == [pb.class_order[:2], pb.class_order[2:]]
    # model label j carries the images of dataset class class_order[j] (red channel = 40·class + 2·i)
    for stream in (pb.benchmark.train_stream, pb.benchmark.test_stream):
        for exp in stream:
            for k in range(len(exp.dataset)):
                x, label, *_ = exp.dataset[k]
                folder_class = round((float(x[0].mean()) * 255 - 4) / 40)
                assert folder_class == pb.class_order[label]
    assert _build("imagenet-r", root, seed=3).class_order == pb.class_order


def test_class_order_depends_on_seed_only(tmp_path):
    root = write_folder_dataset(tmp_path, "imagenet-r", n_classes=6, per_class=3)
    orders = {s: _build("imagenet-r", root, seed=s).class_order for s in (0, 1, 2)}
    for s, order in orders.items():
        assert order == np.random.RandomState(s).permutation(6).tolist()
    assert len({tuple(o) for o in orders.values()}) > 1


def test_seeded_split_is_deterministic_80_20():
    assert seeded_split("n01443537", 10) == seeded_split("n01443537", 10)
    tr, te = seeded_split("n01443537", 10)
    assert len(tr) == 8 and len(te) == 2 and sorted(tr + te) == list(range(10))
    assert [len(p) for p in seeded_split("a", 5)] == [4, 1]
    assert [len(p) for p in seeded_split("a", 2)] == [1, 1]
    assert [len(p) for p in seeded_split("a", 3)] == [2, 1]
    splits = {tuple(seeded_split("n01443537", 50, split_seed=s)[1]) for s in range(4)}
    assert len(splits) > 1  # the split seed matters
    with pytest.raises(ValueError):
        seeded_split("a", 1)


def test_split_same_for_every_run_seed(tmp_path):
    root = write_folder_dataset(tmp_path, "imagenet-a", n_classes=4, per_class=10, ext="png")

    a, b = _build("imagenet-a", root, seed=0), _build("imagenet-a", root, seed=1)
    assert a.class_order != b.class_order
    assert a.test_dataset.paths == b.test_dataset.paths  # same test images for every run seed
    assert a.train_dataset.paths == _build("imagenet-a", root, seed=0).train_dataset.paths
    assert len(a.train_dataset) == 32 and len(a.test_dataset) == 8
    assert not set(a.train_dataset.paths) & set(a.test_dataset.paths)
    for c in range(4):  # 8 train / 2 test images of every class
        assert a.train_dataset.targets.count(c) == 8 and a.test_dataset.targets.count(c) == 2
    c = _build("imagenet-a", root, seed=0, split_seed=7)
    assert c.test_dataset.paths != a.test_dataset.paths
    assert sum(len(e.dataset) for e in a.benchmark.test_stream) == 8


def test_imagenet_a_png_and_divisibility(tmp_path):
    root = write_folder_dataset(tmp_path, "imagenet-a", n_classes=6, per_class=3, ext="png")
    pb = _build("imagenet-a", root)
    _check_stream(pb, n_train=12, n_test=6)
    assert pb.classes_per_experience == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match=r"valid values: \[1, 2, 3, 6\]"):
        _build("imagenet-a", root, n_experiences=4)


def test_cub_uses_official_split(tmp_path):
    root = write_cub(tmp_path, n_classes=4, per_class=4)
    pb = _build("cub200", root)
    _check_stream(pb, n_train=12, n_test=4)
    assert pb.class_names == [f"{c:03d}.Bird_{c}" for c in range(1, 5)]
    assert all(p.endswith("_3.jpg") for p in pb.test_dataset.paths)
    assert not any(p.endswith("_3.jpg") for p in pb.train_dataset.paths)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar100_from_pickles(tmp_path, protocol):
    root = write_cifar(tmp_path, protocol=protocol)
    with pytest.warns(DatasetSizeWarning, match="found 4 classes"):
        pb = build_paper_benchmark("cifar100", root, 2, 0, image_size=SIZE)
    _check_stream(pb, n_train=16, n_test=8)
    assert pb.class_names == ["class_0", "class_5", "class_7", "class_99"]
    x, y, *_ = pb.benchmark.train_stream[0].dataset[0]
    assert torch.allclose(x, x.flatten()[0].expand_as(x), atol=1e-6)  # constant image stays constant


def test_domainnet_class_incremental_over_domains(tmp_path):
    root = write_domainnet(tmp_path)
    with pytest.warns(DatasetSizeWarning, match="only domains"):
        pb = build_paper_benchmark("domainnet", root, 2, 0, image_size=SIZE)
    _check_stream(pb, n_train=16, n_test=16)
    assert pb.class_names == [f"class_{c}" for c in range(4)]
    assert pb.info["domains"] == ["clipart", "sketch"]
    assert [len(e.dataset) for e in pb.benchmark.train_stream] == [8, 8]  # 2 classes × 2 domains × 2


def test_check_root_returns_dataset_dir_and_accepts_dataset_folder(tmp_path):
    root = write_folder_dataset(tmp_path, "imagenet-r", n_classes=2, per_class=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetSizeWarning)
        assert check_root("imagenet-r", root) == root / "imagenet-r"
        assert check_root("imagenet-r", root / "imagenet-r") == root / "imagenet-r"
    with pytest.raises(ValueError, match="accepted: imagenet-r"):
        check_root("imagenet-x", root)


# ------------------------------------------------------------------------------ broken roots


def _refused(name, root, *fragments):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetSizeWarning)
        with pytest.raises(DatasetLayoutError) as info:
            check_root(name, root)
    message = str(info.value)
    assert "expected" in message and PAPER_DATASETS[name].layout in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


@pytest.mark.parametrize("name", sorted(PAPER_DATASETS))
def test_missing_root_is_refused(tmp_path, name):
    _refused(name, tmp_path / "nope", tmp_path / "nope")
    _refused(name, tmp_path, f"found no {PAPER_DATASETS[name].subdir}/ directory in {tmp_path}")


def test_folder_datasets_refuse_no_classes_and_empty_folders(tmp_path):
    (tmp_path / "imagenet-r").mkdir()
    _refused("imagenet-r", tmp_path, f"found no class folders in {tmp_path / 'imagenet-r'}")
    write_folder_dataset(tmp_path, "imagenet-r", n_classes=2, per_class=3)
    (tmp_path / "imagenet-r" / "n99999999").mkdir()
    (tmp_path / "imagenet-r" / "n99999999" / "notes.txt").write_text("x")
    _refused("imagenet-r", tmp_path, "hold no images", "n99999999")
    with pytest.raises(DatasetLayoutError):  # refused before any Avalanche work
        build_paper_benchmark("imagenet-r", tmp_path, 2, 0)


def test_cub_refuses_missing_split_file_and_missing_images(tmp_path):
    write_cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "train_test_split.txt").unlink()
    _refused("cub200", tmp_path, "missing train_test_split.txt")
    write_cub(tmp_path / "b")
    os.remove(next((tmp_path / "b" / "CUB_200_2011" / "images").rglob("*.jpg")))
    _refused("cub200", tmp_path / "b", "missing under")


def test_cifar_refuses_bad_pickles(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"this is not a pickle")
    _refused("cifar100", tmp_path, "not a readable CIFAR pickle")

    write_cifar(tmp_path / "b")
    with open(tmp_path / "b" / "cifar-100-python" / "test", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 1]}, fh)
    _refused("cifar100", tmp_path / "b", "uint8 array N×3072")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "cifar-100-python" / "meta").write_bytes(pickle.dumps(Evil()))
    _refused("cifar100", tmp_path / "c", "refusing to load")

    write_cifar(tmp_path / "d")
    (tmp_path / "d" / "cifar-100-python" / "meta").unlink()
    _refused("cifar100", tmp_path / "d", "missing pickle meta")


def test_domainnet_refuses_missing_split_and_bad_lines(tmp_path):
    write_domainnet(tmp_path)
    (tmp_path / "domainnet" / "sketch_test.txt").unlink()
    _refused("domainnet", tmp_path, "sketch_test.txt")

    write_domainnet(tmp_path / "b")
    (tmp_path / "b" / "domainnet" / "clipart_train.txt").write_text("clipart/class_0/x.jpg zero\n")
    _refused("domainnet", tmp_path / "b", "is not an integer")

    write_domainnet(tmp_path / "c")
    (tmp_path / "c" / "domainnet" / "clipart_train.txt").write_text("clipart/class_0/missing.jpg 0\n")
    _refused("domainnet", tmp_path / "c", "missing")

    (tmp_path / "e" / "domainnet").mkdir(parents=True)
    _refused("domainnet", tmp_path / "e", "found no domain split lists")

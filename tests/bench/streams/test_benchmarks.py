"""The benchmark registry (mergecl.bench.streams.benchmarks): specs, refusals before training,
seeded class orders and subsets, rebuilding a stream over other tensors."""

from __future__ import annotations

import pytest
import torch
from mergecl.bench.config.run_config import ConfigError, resolve_run
from mergecl.bench.config.validation import validate_run
from mergecl.bench.streams.benchmarks import (
    OFFLINE_BENCHMARKS,
    PAPER_DATASET_NAMES,
    build_benchmark,
    get_benchmark,
    paper_benchmark_names,
    with_tensors,
)


def test_paper_dataset_names_match_the_paper_datasets_module():
    from mergecl.bench.streams.paper_datasets import PAPER_DATASETS

    assert set(PAPER_DATASET_NAMES) == set(PAPER_DATASETS)
    assert paper_benchmark_names() == [f"{name}-N" for name in PAPER_DATASET_NAMES]
    assert get_benchmark("cifar100-10").default_experiences == 10


def test_unknown_benchmarks_and_bad_experience_counts_are_refused_before_training():
    with pytest.raises(ConfigError, match="accepted: .*mnist-fmnist"):
        get_benchmark("cifar10-5")
    with pytest.raises(ConfigError, match=r"n_experiences=3 does not divide 10 classes; accepted: \[1, 2, 5, 10\]"):
        validate_run(resolve_run("seqft", "split-mnist", 0, "quick", {"n_experiences": 3}), check_data=False)
    with pytest.raises(ConfigError, match="exactly 2 experiences"):
        validate_run(resolve_run("seqft", "mnist-fmnist", 0, "quick", {"n_experiences": 4}), check_data=False)
    with pytest.raises(ConfigError, match="frozen_blocks"):
        validate_run(resolve_run("seqft", "cifar100-10", 0, "quick", {"frozen_blocks": 5}), check_data=False)


def test_headline_metrics_are_declared():
    assert {name: spec.headline for name, spec in OFFLINE_BENCHMARKS.items()}["mnist-fmnist"] == "acc"
    assert OFFLINE_BENCHMARKS["split-mnist"].headline == "til_acc"


def test_seeded_streams_and_rebuilding_over_other_tensors(data_root):
    cfg = resolve_run("seqft", "split-mnist", 3, "quick", {"data_root": str(data_root)})
    first, again = build_benchmark(cfg), build_benchmark(cfg)
    assert first.class_order == again.class_order
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first.train_tensors, again.train_tensors))
    other = build_benchmark(cfg.model_copy(update={"seed": 4}))
    assert other.class_order != first.class_order
    original = first.train_tensors[0][0].clone()
    doubled = with_tensors(first, [(x * 2, y) for x, y in first.train_tensors], first.test_tensors)
    assert len(doubled.train_stream) == first.n_experiences
    assert torch.equal(doubled.train_tensors[0][0], original * 2)
    assert torch.equal(first.train_tensors[0][0], original)  # the original is untouched


def test_rotated_streams_rotate_each_domain_by_its_step(data_root):
    cfg = resolve_run("seqft", "rotated-mnist-10", 0, "quick", {"data_root": str(data_root), "n_experiences": 3})
    built = build_benchmark(cfg)
    assert built.info["angles"] == [0.0, 20.0, 40.0]
    assert built.scenario == "domain-incremental" and built.n_experiences == 3
    assert OFFLINE_BENCHMARKS["rotated-mnist-10"].default_experiences == 10
    five = build_benchmark(resolve_run("seqft", "rotated-mnist", 0, "quick",
                                       {"data_root": str(data_root), "n_experiences": 2}))
    assert five.info["angles"] == [0.0, 30.0]
    # the unrotated domain is the same images in both streams (same seed, same subsets)
    assert torch.equal(built.train_tensors[0][0], five.train_tensors[0][0])

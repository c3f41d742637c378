"""Validation before any training (mergecl.bench.config.validation): method lookup, params
completed with their defaults, per-run refusals (parameterisation, device, in-memory-only
settings, missing optional logger extras) and per-grid checks."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from mergecl.bench.config import validation
from mergecl.bench.config.run_config import ConfigError, resolve_run
from mergecl.bench.config.validation import (
    check_loggers_available,
    method_class,
    resolved_params,
    validate_grid,
    validate_run,
)


def test_method_class_names_the_accepted_methods():
    assert method_class("lwf").name == "lwf"
    with pytest.raises(ConfigError, match="seqft"):
        method_class("no-such-method")


def test_resolved_params_fill_in_the_defaults_and_name_the_accepted_ones():
    assert resolved_params("lwf", {"alpha": 0.5}) == {"alpha": 0.5, "temperature": 2.0}
    assert resolved_params("ewc", {}) == {"ewc_lambda": 100.0, "mode": "separate", "decay_factor": None}
    with pytest.raises(ConfigError) as info:
        resolved_params("lwf", {"temperature": 0})
    message = str(info.value)
    assert "bad params for method 'lwf'" in message and "temperature" in message and "(got 0)" in message
    assert "alpha=1.0, temperature=2.0" in message


def test_a_missing_logger_extra_is_refused_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    missing = {"wandb", "tensorboard"}
    monkeypatch.setattr(validation.importlib.util, "find_spec",
                        lambda name, *args: None if name in missing else real(name, *args))
    for logger in ("wandb", "tensorboard"):
        cfg = resolve_run("seqft", "split-mnist", 0, "quick", {"loggers": ["csv", logger]})
        with pytest.raises(ConfigError, match=rf"pip install 'mergecl\[{logger}\]'"):
            validate_run(cfg, check_data=False)
    # csv and text loggers need no extra
    check_loggers_available(resolve_run("seqft", "split-mnist", 0, "quick", {"loggers": ["csv", "text"]}))


def test_installed_logger_extras_pass():
    cfg = resolve_run("seqft", "split-mnist", 0, "quick", {"loggers": ["text", "csv"]})
    validate_run(cfg, check_data=False)
    for name, (module, _) in validation.LOGGER_EXTRAS.items():
        if importlib.util.find_spec(module) is not None:
            check_loggers_available(cfg.model_copy(update={"loggers": [name]}))


def test_run_refusals_name_the_bad_value_and_the_accepted_ones(monkeypatch):
    with pytest.raises(ConfigError, match="device 'tpu' not accepted; use cpu or cuda"):
        validate_run(resolve_run("seqft", "split-mnist", 0, "quick", {"device": "tpu"}), check_data=False)
    with pytest.raises(ConfigError, match="validation_fraction=0.1 needs an in-memory benchmark"):
        validate_run(resolve_run("seqft", "cifar100-10", 0, "quick", {"validation_fraction": 0.1}),
                     check_data=False)
    lora = resolve_run("seqft", "split-mnist", 0, "quick", {"parameterisation": "lora"})
    monkeypatch.setattr(validation, "method_class", lambda name: SimpleNamespace(parameterisations=("full",)))
    with pytest.raises(ConfigError, match="does not support parameterisation 'lora'; accepted: full"):
        validate_run(lora, check_data=False)


def test_a_streamed_benchmark_without_a_data_root_is_refused():
    cfg = resolve_run("seqft", "cifar100-10", 0, "quick")
    assert cfg.data_root is None
    with pytest.raises(ConfigError, match="needs --data-root"):
        validate_run(cfg)


def test_grid_checks_data_once_per_benchmark_and_one_method_per_label(monkeypatch):
    checked = []
    monkeypatch.setattr(validation, "check_data_available", lambda cfg: checked.append(cfg.benchmark))
    runs = [resolve_run(m, b, s, "quick") for m in ("seqft", "lwf") for b in ("split-mnist", "rotated-mnist")
            for s in (0, 1)]
    validate_grid(runs)
    assert checked == ["split-mnist", "rotated-mnist"]
    clash = [resolve_run("seqft", "split-mnist", 0, "quick", label="x"),
             resolve_run("lwf", "split-mnist", 0, "quick", label="x")]
    with pytest.raises(ConfigError, match="label 'x' is used for two methods \\('seqft', 'lwf'\\)"):
        validate_grid(clash, check_data=False)

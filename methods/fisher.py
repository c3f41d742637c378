"""Diagonal empirical Fisher information of a classifier, with per-sample gradients.

Used by P&M (Qiu et al., NeurIPS 2025, arXiv 2505.22389: F_i at θ*_i with the true labels) and
BECAME (Li et al., ICML 2025, arXiv 2504.02666: the model's own argmax labels). Equation:

    F_k = (1/N) Σ_{n=1}^{N} ( ∂/∂θ_k log p_θ(y_n | x_n) )²

with y_n the true label (``labels="true"``) or argmax_c p_θ(c | x_n) (``labels="model"``). With a
``class_mask`` the softmax runs over the allowed logits only: p_θ(c | x) = exp z_c / Σ_{c'∈mask}
exp z_{c'}.

:func:`diagonal_fisher` vectorises the per-sample gradients with ``torch.func``
(``vmap(grad(log-likelihood))`` over ``functional_call``); :func:`diagonal_fisher_loop` computes
the same by one autograd backward per sample (the test oracle and performance baseline).
Only the named parameters are differentiated; the other parameters and the buffers are held
fixed. The model is run in whatever train/eval mode it is in — callers should put it in eval
mode (train-mode BatchNorm updates running statistics in the forward, which ``vmap`` refuses,
and normalises each single sample by itself). Neither function modifies the model, its
parameters' ``.grad``, or its ``requires_grad`` flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

StateDict = dict[str, Tensor]
LabelSource = Literal["true", "model"]

__all__ = ["diagonal_fisher", "diagonal_fisher_loop"]


def _check_param_names(model: nn.Module, param_names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(param_names))
    if not names:
        raise ValueError("param_names is empty: name at least one parameter")
    parameters = dict(model.named_parameters())
    unknown = [name for name in names if name not in parameters]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown[:5]}")
    not_float = [name for name in names if not parameters[name].is_floating_point()]
    if not_float:
        raise ValueError(f"parameters {not_float[:5]} are not floating point")
    return names


def _check_options(labels: str, chunk_size: int | None, max_samples: int | None) -> None:
    if labels not in ("true", "model"):
        raise ValueError(f"labels must be 'true' or 'model', got {labels!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")


def _prepare_class_mask(class_mask: Tensor | None, device: torch.device) -> Tensor | None:
    if class_mask is None:
        return None
    if not isinstance(class_mask, Tensor) or class_mask.dtype != torch.bool \
            or class_mask.dim() != 1:
        raise ValueError(f"class_mask must be a 1-D bool tensor, got "
                         f"{getattr(class_mask, 'dtype', type(class_mask).__name__)} "
                         f"of shape {tuple(getattr(class_mask, 'shape', ()))}")
    if not bool(class_mask.any()):
        raise ValueError("class_mask allows no class")
    return class_mask.to(device)


def _samples(batches: Iterable[Sequence[Tensor]], max_samples: int | None,
             device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) batches on ``device``, cut so that at most ``max_samples`` samples are yielded.

    Extra items of a batch (e.g. Avalanche's task labels) are ignored.
    """
    seen = 0
    for batch in batches:
        if max_samples is not None and seen >= max_samples:
            return
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"each batch must be an (x, y, ...) sequence, got "
                             f"{type(batch).__name__}")
        inputs, targets = batch[0], batch[1]
        if not isinstance(targets, Tensor):
            raise ValueError(f"labels must be a tensor, got {type(targets).__name__}")
        if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
            raise ValueError(f"labels must have shape [{inputs.shape[0]}], "
                             f"got {tuple(targets.shape)}")
        if targets.is_floating_point() or targets.is_complex():
            raise ValueError(f"labels must be integer class indices, got {targets.dtype}")
        if max_samples is not None:
            inputs, targets = inputs[: max_samples - seen], targets[: max_samples - seen]
        if inputs.shape[0] == 0:
            continue
        seen += inputs.shape[0]
        yield inputs.to(device), targets.to(device=device, dtype=torch.long)


def _check_logits(logits: object, class_mask: Tensor | None) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(f"the model must return logits of shape [batch, classes], got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)}")
    if class_mask is not None and class_mask.shape[0] != logits.shape[1]:
        raise ValueError(f"class_mask has {class_mask.shape[0]} entries for "
                         f"{logits.shape[1]} logits")


def _check_true_labels(targets: Tensor, class_mask: Tensor | None, n_classes: int) -> None:
    if bool(((targets < 0) | (targets >= n_classes)).any()):
        raise ValueError(f"labels {sorted(set(targets.tolist()))[:10]} are outside "
                         f"[0, {n_classes})")
    if class_mask is not None and not bool(class_mask[targets].all()):
        outside = sorted(set(targets[~class_mask[targets]].tolist()))
        raise ValueError(f"labels {outside[:10]} are outside class_mask")


def _log_likelihood_fn(model: nn.Module, held: dict[str, Tensor], buffers: dict[str, Tensor],
                       class_mask: Tensor | None, use_model_labels: bool
                       ) -> Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]:
    """log p(y | x) of ONE sample as a function of the differentiated parameters."""

    def log_likelihood(differentiated: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (differentiated, held, buffers), (x.unsqueeze(0),))[0]
        if class_mask is not None:
            logits = logits.masked_fill(~class_mask, float("-inf"))
        log_probs = torch.log_softmax(logits, dim=-1)
        target = logits.argmax(dim=-1) if use_model_labels else y
        return log_probs.gather(0, target.reshape(1)).squeeze(0)

    return log_likelihood


def _split_parameters(model: nn.Module, names: list[str]
                      ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    parameters = dict(model.named_parameters())
    differentiated = {name: parameters[name].detach() for name in names}
    held = {name: p.detach() for name, p in parameters.items() if name not in differentiated}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    return differentiated, held, buffers


def _check_batch(model: nn.Module, inputs: Tensor, targets: Tensor, held: dict[str, Tensor],
                 differentiated: dict[str, Tensor], buffers: dict[str, Tensor],
                 class_mask: Tensor | None, labels: str) -> None:
    """Shape/label checks on the first sample (cheap forward without autograd)."""
    with torch.no_grad():
        logits = functional_call(model, (differentiated, held, buffers), (inputs[:1],))
    _check_logits(logits, class_mask)
    if labels == "true":
        _check_true_labels(targets, class_mask, logits.shape[1])


def diagonal_fisher(model: nn.Module, batches: Iterable[Sequence[Tensor]],
                    param_names: Iterable[str], *, labels: LabelSource = "true",
                    class_mask: Tensor | None = None, chunk_size: int | None = None,
                    max_samples: int | None = None) -> StateDict:
    """Diagonal empirical Fisher of the named parameters, per-sample gradients via ``torch.func``.

    Args:
        model: a classifier returning logits [batch, classes]; run in its current mode.
        batches: iterable of (x, y, ...) batches; y are class indices.
        param_names: names (``model.named_parameters()``) of the parameters to differentiate.
        labels: ``"true"`` — the given labels; ``"model"`` — the model's own argmax (within
            ``class_mask``).
        class_mask: optional 1-D bool tensor over the logits; logits outside it are excluded
            from the softmax (true labels must lie inside it).
        chunk_size: samples per vectorised chunk inside a batch (memory cap; None = whole batch).
        max_samples: use at most this many samples (None = all).

    Returns:
        {name: float32 tensor shaped like the parameter, on the parameter's device}.
    """
    _check_options(labels, chunk_size, max_samples)
    names = _check_param_names(model, param_names)
    differentiated, held, buffers = _split_parameters(model, names)
    device = differentiated[names[0]].device
    mask = _prepare_class_mask(class_mask, device)
    per_sample_gradients = vmap(
        grad(_log_likelihood_fn(model, held, buffers, mask, labels == "model")),
        in_dims=(None, 0, 0), chunk_size=chunk_size, randomness="different",
    )
    sums = {name: torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            for name, p in differentiated.items()}
    count = 0
    for inputs, targets in _samples(batches, max_samples, device):
        _check_batch(model, inputs, targets, held, differentiated, buffers, mask, labels)
        gradients = per_sample_gradients(differentiated, inputs, targets)
        for name, per_sample in gradients.items():
            sums[name].add_(per_sample.to(torch.float32).square().sum(dim=0))
        count += inputs.shape[0]
    if count == 0:
        raise ValueError("batches yielded no samples")
    return {name: total.div_(count) for name, total in sums.items()}


def diagonal_fisher_loop(model: nn.Module, batches: Iterable[Sequence[Tensor]],
                         param_names: Iterable[str], *, labels: LabelSource = "true",
                         class_mask: Tensor | None = None, chunk_size: int | None = None,
                         max_samples: int | None = None) -> StateDict:
    """Same as :func:`diagonal_fisher` by a plain loop: one forward + autograd backward per sample.

    The reference implementation (test oracle, performance baseline). ``chunk_size`` is
    accepted for signature parity and ignored.
    """
    _check_options(labels, chunk_size, max_samples)
    names = _check_param_names(model, param_names)
    differentiated, held, buffers = _split_parameters(model, names)
    device = differentiated[names[0]].device
    mask = _prepare_class_mask(class_mask, device)
    leaves = {name: p.clone().requires_grad_(True) for name, p in differentiated.items()}
    log_likelihood = _log_likelihood_fn(model, held, buffers, mask, labels == "model")
    sums = {name: torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            for name, p in differentiated.items()}
    count = 0
    for inputs, targets in _samples(batches, max_samples, device):
        _check_batch(model, inputs, targets, held, differentiated, buffers, mask, labels)
        for index in range(inputs.shape[0]):
            value = log_likelihood(leaves, inputs[index], targets[index])
            gradients = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
            for name, gradient in zip(leaves, gradients):
                if gradient is not None:  # None: the output does not depend on it (F = 0)
                    sums[name].add_(gradient.to(torch.float32).square())
            count += 1
    if count == 0:
        raise ValueError("batches yielded no samples")
    return {name: total.div_(count) for name, total in sums.items()}

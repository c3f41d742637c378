"""A mergecl method as a plugin of *your* Avalanche strategy: ``mergecl.plugin(name, model, benchmark)``.

::

    method = mergecl.plugin("pnm", model, benchmark)          # an avalanche SupervisedPlugin
    strategy = Naive(model, optimizer, ..., plugins=[method])  # any template, any optimiser

What the plugin infers:

* from the **benchmark** (an Avalanche benchmark, or a :class:`StreamInfo`): the classes of each
  training experience (``classes_in_this_experience``), the number of classes, the scenario
  (domain-incremental when every experience has the same classes, else class-incremental), and
  each experience's training data for the statistics some methods take after a task (P&M's and
  BECAME's Fisher, BECAME's input subspaces, TRM's objectives): a seeded shuffle of the
  experience's dataset in its evaluation transforms;
* from the **model**: its classifier head (an explicit ``head="module.name"``, else the first of
  ``head``, ``classifier``, ``fc``; timm models and Avalanche's SimpleMLP are found), and the
  parameters it trains (every trainable floating-point parameter, or LoRA adapters with
  ``parameterisation="lora"`` and ``lora_targets``);
* from the **strategy**, at each experience: the number of epochs and batches (the training plan).

What it cannot infer, and asks for:

* ``loss_mask`` — the logits your loss uses: ``"none"`` (default: plain cross-entropy over all
  logits, as Avalanche's templates compute it), ``"current"`` or ``"seen"`` if your strategy
  masks its loss like mergecl's; methods fit their statistics on that loss;
* ``head`` when the model's head is not found under the usual names; ``scenario`` when the
  class sets mislead; ``seed`` for the plugin's own random draws (default 0).

Methods that run with Avalanche's own regularisers (``ewc``, ``lwf``) come back as one plugin
that calls the method and those regularisers' hooks in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from mergecl.methods.base import MethodContext, PluginHooks, register_with_avalanche
from mergecl.methods.parameterisation import build_space
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class StreamInfo(BaseModel):
    """What a plugin needs to know about a stream when it is not given an Avalanche benchmark."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    classes_per_experience: list[list[int]]
    n_classes: int
    scenario: Literal["class-incremental", "domain-incremental"] | None = None
    datasets: list[Any] | None = None
    """Each training experience's dataset (map-style, items ``(x, y, ...)``), for statistics."""


def stream_info(benchmark: Any) -> StreamInfo:
    """The :class:`StreamInfo` of an Avalanche benchmark."""
    if isinstance(benchmark, StreamInfo):
        return benchmark
    experiences = list(benchmark.train_stream)
    classes = [sorted(int(c) for c in exp.classes_in_this_experience) for exp in experiences]
    n_classes = getattr(benchmark, "n_classes", None) or (max(max(c) for c in classes if c) + 1)
    return StreamInfo(classes_per_experience=classes, n_classes=int(n_classes),
                      datasets=[exp.dataset for exp in experiences])


def _dataset_batches(datasets: Sequence[Any] | None, seed: int):
    def batches(task: int, max_samples: int | None = None,
                batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        if datasets is None:
            raise RuntimeError("this method needs each experience's training data after training; "
                               "pass an Avalanche benchmark, or StreamInfo(datasets=[...])")
        dataset = datasets[task]
        dataset = dataset.eval() if hasattr(dataset, "eval") else dataset
        generator = torch.Generator().manual_seed(seed * 7919 + task)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size or 64, shuffle=True,
                                             generator=generator)
        seen = 0
        for batch in loader:
            x, y = batch[0], batch[1]
            if max_samples is not None and seen + len(y) > max_samples:
                x, y = x[: max_samples - seen], y[: max_samples - seen]
            seen += len(y)
            yield x, y
            if max_samples is not None and seen >= max_samples:
                return

    return batches


class PluginGroup(PluginHooks):
    """One Avalanche plugin that calls each member's hooks in order (a method and the
    Avalanche regularisers it runs with)."""

    def __init__(self, members: Sequence[Any]) -> None:
        self.members = list(members)
        self.method = self.members[0]

    def __getattribute__(self, name: str) -> Any:
        if name.startswith(("before_", "after_")):
            members = object.__getattribute__(self, "members")

            def call(strategy: Any, *args: Any, **kwargs: Any) -> None:
                for member in members:
                    hook = getattr(member, name, None)
                    if hook is not None:
                        hook(strategy, *args, **kwargs)

            return call
        return object.__getattribute__(self, name)


def plugin(name: str, model: nn.Module, benchmark: Any, *, head: str | None = None,
           parameterisation: Literal["full", "lora"] = "full", lora_targets: Iterable[str] = (),
           lora_rank: int = 8, lora_alpha: float = 16.0,
           loss_mask: Literal["none", "current", "seen"] = "none",
           scenario: Literal["class-incremental", "domain-incremental"] | None = None,
           head_rule: Literal["merge-old-rows", "merge-all", "keep-trained"] = "merge-old-rows",
           seed: int = 0, **params: Any) -> Any:
    """The mergecl method ``name`` (a registry name or alias) as an Avalanche plugin for
    ``model`` on ``benchmark``; ``params`` are its hyper-parameters (``mergecl methods``)."""
    from mergecl.methods.registry import get_method, resolve_alias

    method_name, method_params = resolve_alias(name, params)
    cls = get_method(method_name)
    info = stream_info(benchmark)
    if scenario is None:
        same = all(set(c) == set(info.classes_per_experience[0]) for c in info.classes_per_experience)
        scenario = info.scenario or ("domain-incremental" if same else "class-incremental")
    if parameterisation == "lora" and not lora_targets:
        raise ValueError("parameterisation='lora' needs lora_targets (module name patterns)")
    space = build_space(model, parameterisation, targets=list(lora_targets), rank=lora_rank,
                        alpha=lora_alpha, generator=torch.Generator().manual_seed(seed + 777), head=head)
    context = MethodContext(
        space=space, classes_per_experience=tuple(tuple(c) for c in info.classes_per_experience),
        n_classes=info.n_classes, scenario=scenario, loss_mask=loss_mask, head_rule=head_rule,
        batches=_dataset_batches(info.datasets, seed),
        generator=torch.Generator().manual_seed(seed + 12345))
    method = cls(cls.Params(**method_params), context)
    register_with_avalanche()
    extras = method.extra_plugins()
    if not extras:
        return method
    from avalanche.core import SupervisedPlugin

    SupervisedPlugin.register(PluginGroup)
    return PluginGroup([method, *extras])

"""Full and LoRA parameterisations: what is trained, and what a merge sees.

Every method works on the *effective dense values* of the mergeable parameters, a state dict
keyed by the model's own parameter names:

* ``full`` — every trainable floating-point parameter of the model (backbone and head).
* ``lora`` — the backbone is frozen; a peft LoRA adapter (rank r, scale α/r) is trained on the
  target modules, the head is trained fully. The mergeable entries are the targeted *base*
  weights, whose effective value is ``W + B·A·(α/r)``, plus the head. After a merge the result
  is written into the base weights and the adapter is restarted (A re-initialised, B = 0), so
  every task trains a fresh adapter from the merged model (docs/methods.md, "lora").

For timm ViTs, ``kv_only=True`` restricts the adapter on the fused ``qkv`` projection to the
key/value output rows (P&M's setting) by zeroing B's query rows and their gradients.

Adapter restarts draw A from the space's own seeded generator, once per task
(:meth:`ParameterSpace.start_task`); loading a state only zeroes B. So the random stream of a
run does not depend on how often a method loads states (MagMax loads θ*_{t−1} and θ̂_t, SeqFT
loads once): every method that trains the same trajectory draws the same adapters.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]


HEAD_ATTRIBUTES: tuple[str, ...] = ("head", "classifier", "fc")
"""Where a model's classifier head is looked for (after an explicit ``head=`` module name):
the harness's models and timm's expose ``head``; Avalanche's SimpleMLP ``classifier``;
torchvision's ResNets ``fc``."""


def head_module(model: nn.Module, head: str | None = None) -> nn.Module | None:
    """The classifier head: the submodule named ``head`` (dotted path) if given, else the first
    of :data:`HEAD_ATTRIBUTES` the model has (a module with parameters), else None."""
    if head is not None:
        try:
            return model.get_submodule(head)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name]
            raise ValueError(f"head={head!r} is not a submodule of the model; accepted: "
                             f"{', '.join(names[-8:])} …") from None
    for attribute in HEAD_ATTRIBUTES:
        module = getattr(model, attribute, None)
        if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
            return module
    return None


def head_parameter_names(model: nn.Module, head: str | None = None) -> list[str]:
    """Names (in ``model.named_parameters()``) of the classifier head's parameters."""
    module = head_module(model, head)
    if module is None:
        return []
    ids = {id(p) for p in module.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


class ParameterSpace(ABC):
    """What is trained and what is merged, for one model."""

    kind: str

    def __init__(self, model: nn.Module, head: str | None = None) -> None:
        self.model = model
        self.head = head
        self.head_names = head_parameter_names(model, head)

    @property
    @abstractmethod
    def names(self) -> list[str]:
        """Names of the mergeable (effective) parameters."""

    @abstractmethod
    def effective_state(self) -> StateDict:
        """Detached copies of the effective values of the mergeable parameters."""

    @abstractmethod
    def load_effective_state(self, state: StateDict) -> None:
        """Write effective values into the model (LoRA: into base weights; adapters restart)."""

    @abstractmethod
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters the optimiser updates, by name."""

    def parameter_groups(self, lr: float, head_lr: float) -> list[dict]:
        head = set(self.head_names)
        trainable = self.trainable_parameters()
        body = [p for n, p in trainable.items() if n not in head]
        head_params = [p for n, p in trainable.items() if n in head]
        groups = []
        if body:
            groups.append({"params": body, "lr": lr, "name": "backbone"})
        if head_params:
            groups.append({"params": head_params, "lr": head_lr, "name": "head"})
        return groups

    def start_task(self) -> None:
        """Called before each task's training (LoRA: make sure the adapter is fresh)."""

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    def set_adapter_factor(self, factor: float) -> None:
        """Scale every adapter's output by ``factor`` (LoRA only; 1.0 restores)."""

    def functional_parameters(self, state: StateDict) -> StateDict:
        """Parameters for ``torch.func.functional_call`` that evaluate the model at the effective
        ``state`` without changing it (LoRA: the adapters are overridden with B = 0)."""
        return dict(state)

    @torch.no_grad()
    def training_state(self) -> StateDict:
        """Copies of every parameter training can change or that a task starts from (full:
        the trainable parameters; LoRA: base weights, adapters and head): loading it back
        leaves the model exactly as it was."""
        params = self.parameters_by_name()
        return {name: params[name].detach().clone() for name in self.training_names()}

    @torch.no_grad()
    def load_training_state(self, state: StateDict) -> None:
        """Restore :meth:`training_state` exactly."""
        params = self.parameters_by_name()
        if set(state) != set(self.training_names()):
            raise ValueError("training state does not match this parameter space "
                             f"({sorted(set(state) ^ set(self.training_names()))[:5]})")
        for name, value in state.items():
            params[name].copy_(value)

    def training_names(self) -> list[str]:
        return self.names

    def generator_state(self) -> Tensor | None:
        """State of the space's random stream (LoRA adapter restarts), for exact resumption."""
        return None

    def set_generator_state(self, state: Tensor | None) -> None:
        """Restore :meth:`generator_state`."""


class FullSpace(ParameterSpace):
    kind = "full"

    def __init__(self, model: nn.Module, head: str | None = None) -> None:
        super().__init__(model, head)
        self._names = [n for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def effective_state(self) -> StateDict:
        params = self.parameters_by_name()
        return {n: params[n].detach().clone() for n in self._names}

    @torch.no_grad()
    def load_effective_state(self, state: StateDict) -> None:
        params = self.parameters_by_name()
        for name, value in state.items():
            params[name].copy_(value)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        params = self.parameters_by_name()
        return {n: params[n] for n in self._names}


class LoraSpace(ParameterSpace):
    kind = "lora"
    adapter = "default"

    def __init__(self, model: nn.Module, targets: list[str], rank: int, alpha: float,
                 kv_only: bool = False, generator: torch.Generator | None = None,
                 head: str | None = None) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__(model, head)
        self.generator = generator or torch.Generator().manual_seed(0)
        if not targets:
            raise ValueError("LoRA needs at least one target module pattern (lora_targets)")
        classifier = head_module(model, head)
        head_modules = {name for name, module in model.named_modules() if module is classifier}
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                            bias="none", exclude_modules=list(head_modules) or None)
        try:
            inject_adapter_in_model(config, model)
        except ValueError as exc:
            raise ValueError(f"LoRA targets {targets!r} match no supported module of the backbone: {exc}") from None
        for p in model.parameters():
            p.requires_grad_(False)
        self.lora_layers: dict[str, nn.Module] = {}
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and self.adapter in getattr(module, "lora_A", {}):
                self.lora_layers[name] = module
                for p in module.lora_A[self.adapter].parameters():
                    p.requires_grad_(True)
                for p in module.lora_B[self.adapter].parameters():
                    p.requires_grad_(True)
        if not self.lora_layers:
            raise ValueError(f"LoRA targets {targets!r} matched no module")
        self.head_names = head_parameter_names(model, head)
        params = self.parameters_by_name()
        for n in self.head_names:
            params[n].requires_grad_(True)
        self._base_scaling = {n: float(m.scaling[self.adapter]) for n, m in self.lora_layers.items()}
        self.kv_rows: dict[str, slice] = {}
        if kv_only:
            for name, module in self.lora_layers.items():
                if name.endswith("qkv"):
                    out = module.base_layer.weight.shape[0]
                    self.kv_rows[name] = slice(0, out // 3)  # the query rows, kept at zero
                    module.lora_B[self.adapter].weight.register_hook(self._zero_query_rows(out // 3))
        self._names = [f"{n}.base_layer.weight" for n in self.lora_layers] + self.head_names
        self.reset_adapters()

    @staticmethod
    def _zero_query_rows(n_query: int):
        def hook(grad: Tensor) -> Tensor:
            grad = grad.clone()
            grad[:n_query] = 0
            return grad

        return hook

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @torch.no_grad()
    def reset_adapters(self) -> None:
        """A fresh adapter: A drawn from the space's generator (peft's Kaiming-uniform init),
        B = 0."""
        for module in self.lora_layers.values():
            a = module.lora_A[self.adapter].weight
            bound = 1.0 / math.sqrt(a[0].numel())  # kaiming_uniform_(a=√5): √(1/3)·√(3/fan_in)
            a.copy_(torch.empty(a.shape, dtype=a.dtype).uniform_(-bound, bound, generator=self.generator))
            module.lora_B[self.adapter].weight.zero_()

    def delta(self, layer_name: str) -> Tensor:
        module = self.lora_layers[layer_name]
        return module.get_delta_weight(self.adapter)

    @torch.no_grad()
    def effective_state(self) -> StateDict:
        params = self.parameters_by_name()
        state: StateDict = {}
        for name, module in self.lora_layers.items():
            base = module.base_layer.weight
            state[f"{name}.base_layer.weight"] = (base + self.delta(name).to(base.dtype)).detach().clone()
        for n in self.head_names:
            state[n] = params[n].detach().clone()
        return state

    @torch.no_grad()
    def load_effective_state(self, state: StateDict) -> None:
        """Write effective values into the base weights and the head; the adapters contribute
        nothing afterwards (B = 0; A is left as it is and redrawn at the next task start)."""
        params = self.parameters_by_name()
        for name, value in state.items():
            params[name].copy_(value)
        for module in self.lora_layers.values():
            module.lora_B[self.adapter].weight.zero_()

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def start_task(self) -> None:
        """Fold a live adapter into the base weights, then restart it (a fresh A, B = 0)."""
        if any(m.lora_B[self.adapter].weight.abs().sum() > 0 for m in self.lora_layers.values()):
            self.load_effective_state(self.effective_state())
        self.reset_adapters()

    def training_names(self) -> list[str]:
        names = [f"{n}.base_layer.weight" for n in self.lora_layers]
        for n in self.lora_layers:
            names += [f"{n}.lora_A.{self.adapter}.weight", f"{n}.lora_B.{self.adapter}.weight"]
        return names + self.head_names

    def functional_parameters(self, state: StateDict) -> StateDict:
        out = dict(state)
        for name, module in self.lora_layers.items():
            out[f"{name}.lora_B.{self.adapter}.weight"] = torch.zeros_like(module.lora_B[self.adapter].weight)
        return out

    def generator_state(self) -> Tensor | None:
        return self.generator.get_state()

    def set_generator_state(self, state: Tensor | None) -> None:
        if state is not None:
            self.generator.set_state(state)

    def set_adapter_factor(self, factor: float) -> None:
        for name, module in self.lora_layers.items():
            module.scaling[self.adapter] = self._base_scaling[name] * factor


def build_space(model: nn.Module, kind: str, *, targets: list[str] | None = None, rank: int = 8,
                alpha: float = 16.0, kv_only: bool = False,
                generator: torch.Generator | None = None, head: str | None = None) -> ParameterSpace:
    if kind == "full":
        return FullSpace(model, head)
    if kind == "lora":
        return LoraSpace(model, targets or [], rank, alpha, kv_only=kv_only, generator=generator,
                         head=head)
    raise ValueError(f"unknown parameterisation {kind!r}; accepted: full, lora")

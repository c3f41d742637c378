"""Full and LoRA parameterisations: what is trained, and what a merge sees.

Every method works on the *effective dense values* of the mergeable parameters, a state dict
keyed by the model's own parameter names:

* ``full`` — every trainable floating-point parameter of the model (backbone and head).
* ``lora`` — the backbone is frozen; a peft LoRA adapter (rank r, scale α/r) is trained on the
  target modules, the head is trained fully. The mergeable entries are the targeted *base*
  weights, whose effective value is ``W + B·A·(α/r)``, plus the head. After a merge the result
  is written into the base weights and the adapter is restarted (A re-initialised, B = 0), so
  every task trains a fresh adapter from the merged model (METHODS.md, "lora").

For timm ViTs, ``kv_only=True`` restricts the adapter on the fused ``qkv`` projection to the
key/value output rows (P&M's setting) by zeroing B's query rows and their gradients.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names (in ``model.named_parameters()``) of the classifier head's parameters."""
    head = getattr(model, "head", None)
    if head is None:
        return []
    ids = {id(p) for p in head.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


class ParameterSpace(ABC):
    """What is trained and what is merged, for one model."""

    kind: str

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.head_names = head_parameter_names(model)

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


class FullSpace(ParameterSpace):
    kind = "full"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
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
                 kv_only: bool = False) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__(model)
        if not targets:
            raise ValueError("LoRA needs at least one target module pattern (lora_targets)")
        head_modules = {name for name, _ in model.named_modules()
                        if getattr(model, "head", None) is not None and _ is model.head}
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
        self.head_names = head_parameter_names(model)
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
        for module in self.lora_layers.values():
            a = module.lora_A[self.adapter].weight
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
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
        params = self.parameters_by_name()
        for name, value in state.items():
            params[name].copy_(value)
        self.reset_adapters()

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def start_task(self) -> None:
        # the adapter is folded into the base weights at every merge; a task starts fresh
        if any(m.lora_B[self.adapter].weight.abs().sum() > 0 for m in self.lora_layers.values()):
            self.load_effective_state(self.effective_state())

    def set_adapter_factor(self, factor: float) -> None:
        for name, module in self.lora_layers.items():
            module.scaling[self.adapter] = self._base_scaling[name] * factor


def build_space(model: nn.Module, kind: str, *, targets: list[str] | None = None, rank: int = 8,
                alpha: float = 16.0, kv_only: bool = False) -> ParameterSpace:
    if kind == "full":
        return FullSpace(model)
    if kind == "lora":
        return LoraSpace(model, targets or [], rank, alpha, kv_only=kv_only)
    raise ValueError(f"unknown parameterisation {kind!r}; accepted: full, lora")

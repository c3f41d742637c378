"""Features of a frozen backbone prefix, computed once per image and cached by content.

With ``frozen_blocks: k`` (docs/protocol.md) the stem and the first k stages of the backbone
are frozen (:func:`mergecl.bench.training.models.split_frozen_prefix`): their output for an
image never changes, so it is computed once — before training, for every training and test
image of the run — and the strategy, the methods' statistics and the evaluation all work on
those features. Every run of a grid uses the same images of a (benchmark, seed), so the
features are cached on disk (``$MERGECL_FEATURES``, default ``~/.cache/mergecl/features``),
addressed by the content of the images and of the prefix's weights: a cached file is exactly
what the prefix computes (it is what it computed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from mergecl.bench.caches import atomic_torch_save, cache_dir
from mergecl.bench.training.models import FrozenPrefix
from torch import Tensor

TensorPair = tuple[Tensor, Tensor]


def prefix_digest(prefix: FrozenPrefix, settings: dict) -> str:
    """A digest of the prefix: its weights (bytes), its input handling and ``settings``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(prefix.layers.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:20]


def tensor_digest(x: Tensor) -> str:
    data = x.detach().cpu().contiguous()
    digest = hashlib.sha256(str((tuple(data.shape), str(data.dtype))).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:20]


@torch.no_grad()
def compute_features(prefix: FrozenPrefix, x: Tensor, batch_size: int = 1000) -> Tensor:
    prefix.eval()
    parts = [prefix(x[start:start + batch_size]) for start in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


def cached_features(prefix: FrozenPrefix, x: Tensor, prefix_id: str, use_cache: bool = True,
                    batch_size: int = 1000) -> Tensor:
    """The prefix's features of ``x``, from the cache when there (else computed and stored)."""
    if not use_cache:
        return compute_features(prefix, x, batch_size)
    path = cache_dir("features") / prefix_id / f"{tensor_digest(x)}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged file is recomputed and replaced
            pass
    features = compute_features(prefix, x, batch_size)
    atomic_torch_save(features, path)
    return features


def featurize_pairs(prefix: FrozenPrefix, pairs: Sequence[TensorPair], prefix_id: str,
                    use_cache: bool = True, batch_size: int = 1000) -> list[TensorPair]:
    return [(cached_features(prefix, x, prefix_id, use_cache, batch_size), y) for x, y in pairs]

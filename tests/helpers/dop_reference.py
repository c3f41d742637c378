"""DOP's per-layer merge in the slow obvious form (the reference's loop, autograd through the
projection losses), the oracle of the closed-form gradients in mergecl.methods.dop; used by
tests/methods/test_dop.py and the perf suite."""

from __future__ import annotations

import torch
from mergecl.methods.dop import leading_subspace, min_norm_weights, projection_loss


def autograd_dop_merge_matrix(pretrained, inputs, *, lr, num_steps, mgda, ema, ema_beta, alpha,
                              epsilon, space):
    """The slow obvious form (the reference's loop): autograd through both losses for MGDA,
    then through their weighted sum, one Adam step."""
    subspaces = [leading_subspace(w - pretrained, epsilon) for w in inputs]
    merged = torch.nn.Parameter((inputs[0] + inputs[1]) / 2)
    optimiser = torch.optim.Adam([merged], lr=lr)
    weights = [alpha, 1.0 - alpha]
    for _ in range(num_steps):
        if mgda:
            grads, losses = [], []
            for target, (u, s, v) in zip(inputs, subspaces):
                loss = projection_loss(merged - target, u, s, v, space)
                losses.append(float(loss.data))
                optimiser.zero_grad()
                loss.backward()
                grads.append(merged.grad.data.clone())
            grads = [g / loss if loss > 0 else g for g, loss in zip(grads, losses)]
            solution = min_norm_weights(grads[0], grads[1])
            weights = ([ema_beta * w + (1 - ema_beta) * x for w, x in zip(weights, solution)]
                       if ema else list(solution))
        total = sum(w * projection_loss(merged - target, u, s, v, space)
                    for w, target, (u, s, v) in zip(weights, inputs, subspaces))
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    return merged.detach(), weights

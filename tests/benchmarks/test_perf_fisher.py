"""Fisher estimation: batched per-sample gradients (``torch.func`` vmap) vs the per-sample loop.

5. ``mergecl.methods.fisher.diagonal_fisher`` vs ``diagonal_fisher_loop`` on EfficientNet-Lite0 at 32 px
   over 64 samples, with the settings ``MergeMethod.estimate_fisher`` uses: model in eval mode,
   ``channels_last`` input re-layout off (vmap cannot re-layout per-sample inputs), batches and
   vmap chunks of 32, every mergeable parameter of the full parameterisation, the loss restricted
   to the current experience's classes. Interleaved rounds; the speed-up is loop time / vmap
   time (lower quartiles of the rounds, see ``conftest.HEADLINE_QUANTILE``). The two must agree (same estimator).
"""

from __future__ import annotations

from time import perf_counter

import pytest
import torch

SAMPLES = 64
CHUNK = 32
ROUNDS = 2
SPEEDUP_TARGET = 1.0  # the batched path exists to be faster than the loop


@pytest.mark.benchmark(group="fisher")
def test_fisher_vmap_vs_loop(benchmark, perf):
    from mergecl.bench.config.run_config import RunConfig
    from mergecl.bench.training.run import build_model, build_space_for
    from mergecl.methods.fisher import diagonal_fisher, diagonal_fisher_loop

    cfg = RunConfig(method="pnm", benchmark="split-mnist", threads=2, image_size=32,
                    channels_last=True, batch_size=64)
    model = build_model(cfg, 10)
    space = build_space_for(cfg, model)
    model.eval()
    model.channels_last = False  # as MergeMethod.estimate_fisher does
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(SAMPLES, 1, 32, 32, generator=generator)
    y = torch.randint(0, 2, (SAMPLES,), generator=generator)
    class_mask = torch.zeros(10, dtype=torch.bool)
    class_mask[[0, 1]] = True
    names = space.names

    def batches():
        return [(x[i:i + CHUNK], y[i:i + CHUNK]) for i in range(0, SAMPLES, CHUNK)]

    kwargs = {"labels": "true", "class_mask": class_mask, "chunk_size": CHUNK}
    results = {}
    variants = {
        "vmap": lambda: diagonal_fisher(model, batches(), names, **kwargs),
        "loop": lambda: diagonal_fisher_loop(model, batches(), names, **kwargs),
    }
    cold_started = perf_counter()
    results["vmap"] = variants["vmap"]()  # first call in this test (vmap set-up)
    cold = perf_counter() - cold_started
    times = perf.interleaved_rounds(
        benchmark, variants, ROUNDS,
        on_result=lambda name, r, value: results.__setitem__(name, value))
    for name in names:  # same estimator, two implementations
        torch.testing.assert_close(results["vmap"][name], results["loop"][name], rtol=1e-3, atol=1e-9)

    summary = perf.ratio_summary(times["loop"], times["vmap"])
    details = {"samples": SAMPLES, "chunk_size": CHUNK, "parameters": len(names),
               "floats": sum(p.numel() for n, p in model.named_parameters() if n in set(names)),
               "median_s": {k: round(perf.median(v), 3) for k, v in times.items()},
               "first_vmap_call_s": round(cold, 3),
               "first_call_over_warm": round(cold / perf.median(times["vmap"]), 3), **summary}
    benchmark.extra_info.update(details)
    perf.record("5.fisher.vmap_speedup", "Fisher speed-up: loop time / vmap time (64 samples)",
                summary["ratio"], target=SPEEDUP_TARGET, op=">=",
                baseline="diagonal_fisher_loop (one forward + backward per sample)", details=details,
                summary=summary,
                note=(f"per sample "
                      f"{perf.median(times['vmap']) / SAMPLES * 1e3:.0f} ms (vmap) vs "
                      f"{perf.median(times['loop']) / SAMPLES * 1e3:.0f} ms (loop); first vmap "
                      f"call in the test {cold / perf.median(times['vmap']):.1f}x a warm call"))

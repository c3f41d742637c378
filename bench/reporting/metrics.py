"""Continual-learning metrics computed from an accuracy matrix.

``R[i][j]`` is the accuracy on test experience ``j`` after training experience ``i``; a run
over ``T`` experiences gives a ``T x T`` matrix. The definitions follow the "Metrics" section
of ``docs/methods.md`` exactly:

* **Acc** (final average accuracy) = ``mean_j R[T-1][j]``;
* **AAA** (average anytime accuracy) = ``mean_i ( mean_{j<=i} R[i][j] )``;
* **Forgetting** = ``mean_{j<T-1} ( max_{i<T-1} R[i][j] - R[T-1][j] )``;
* **BWT** (backward transfer) = ``mean_{j<T-1} ( R[T-1][j] - R[j][j] )``.

Note that the maximum in Forgetting runs over *all* ``i < T-1`` (as written in docs/methods.md),
including rows recorded before experience ``j`` was trained; in the class-incremental setting
those entries are ~0 and the result equals the more common ``max_{j<=i<T-1}`` form.

Every value is returned in the units of ``R`` (fractions in, fractions out; percentages in,
percentages out) as a plain Python ``float``. With a single experience (``T = 1``) nothing can
be forgotten or transferred backwards, so ``forgetting`` and ``bwt`` are ``None``.

Joint training (the upper bound) evaluates once, after training on everything, and so yields
a single row of ``T`` accuracies: summarise it with :func:`summarize_row`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("acc", "aaa", "forgetting", "bwt")
"""Keys of the dictionaries returned by :func:`summarize` and :func:`summarize_row`."""


def _as_float_array(values: Any, what: str) -> np.ndarray:
    """Convert ``values`` to a float array, refusing ragged or non-numeric input."""
    try:
        array = np.asarray(values, dtype=float)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{what} must be a rectangular array of numbers (ragged or non-numeric input): {exc}"
        ) from exc
    if array.size and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{what} contains a non-finite value (NaN, inf or missing) at index {tuple(bad)}"
        )
    return array


def accuracy_matrix(R: Any) -> np.ndarray:
    """Validate ``R`` and return it as a square ``T x T`` float array (``T >= 1``).

    Raises ``ValueError`` when ``R`` is empty, ragged, not two-dimensional, not square, or
    contains a non-finite entry.
    """
    matrix = _as_float_array(R, "accuracy matrix")
    if matrix.size == 0:
        raise ValueError(f"accuracy matrix is empty (shape {matrix.shape})")
    if matrix.ndim != 2:
        raise ValueError(
            f"accuracy matrix must be 2-D (T x T), got {matrix.ndim}-D with shape {matrix.shape}"
        )
    n_rows, n_cols = matrix.shape
    if n_rows != n_cols:
        raise ValueError(
            f"accuracy matrix must be square (T x T), got {n_rows} x {n_cols}; "
            "use summarize_row for joint training's single row"
        )
    return matrix


def accuracy_curve(R: Any) -> list[float]:
    """Accuracy after each experience on the experiences seen so far: ``mean_{j<=i} R[i][j]``.

    These are the terms averaged by AAA, one per experience, in the units of ``R``.
    """
    matrix = accuracy_matrix(R)
    return [float(matrix[i, : i + 1].mean()) for i in range(matrix.shape[0])]


def summarize(R: Any) -> dict[str, float | None]:
    """Acc, AAA, Forgetting and BWT of a square accuracy matrix (see the module docstring).

    Returns ``{"acc", "aaa", "forgetting", "bwt"}`` in the units of ``R``; ``forgetting`` and
    ``bwt`` are ``None`` when ``T = 1``. Raises ``ValueError`` on invalid input.
    """
    matrix = accuracy_matrix(R)
    n_tasks = matrix.shape[0]
    final_row = matrix[-1]
    summary: dict[str, float | None] = {
        "acc": float(final_row.mean()),
        "aaa": float(np.mean(accuracy_curve(matrix))),
        "forgetting": None,
        "bwt": None,
    }
    if n_tasks >= 2:
        old = slice(0, n_tasks - 1)
        best_before_end = matrix[old, old].max(axis=0)
        summary["forgetting"] = float(np.mean(best_before_end - final_row[old]))
        summary["bwt"] = float(np.mean(final_row[old] - np.diag(matrix)[old]))
    return summary


def summarize_row(row: Any) -> dict[str, float | None]:
    """Summary of joint training's single evaluation row: ``acc`` = mean of the row.

    ``row`` may be 1-D (``T`` accuracies) or a ``1 x T`` matrix, as stored in joint records.
    ``aaa``, ``forgetting`` and ``bwt`` are ``None`` (there is no sequence of tasks).
    """
    values = _as_float_array(row, "accuracy row")
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1:
        raise ValueError(
            f"accuracy row must be 1-D or a 1 x T matrix, got shape {values.shape}"
        )
    if values.size == 0:
        raise ValueError("accuracy row is empty")
    return {"acc": float(values.mean()), "aaa": None, "forgetting": None, "bwt": None}

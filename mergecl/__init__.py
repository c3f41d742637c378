"""mergecl — a benchmarking harness for model-merging continual learning.

The distribution installs one import name, ``mergecl``:

* :mod:`mergecl.methods` — every method as an Avalanche strategy plugin over a pure merging core;
* :mod:`mergecl.bench` — config → grid → runner → store → reporting, and the ``mergecl`` command;
* :func:`plugin` — a method as a plugin of your own Avalanche strategy (docs/avalanche.md).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"


def plugin(name: str, model: Any, benchmark: Any, **options: Any) -> Any:
    """The mergecl method ``name`` as an Avalanche ``SupervisedPlugin`` for ``model`` on
    ``benchmark`` (an Avalanche benchmark); see :func:`mergecl.methods.avalanche_native.plugin`
    for what it infers and the options it takes."""
    from mergecl.methods.avalanche_native import plugin as make_plugin

    return make_plugin(name, model, benchmark, **options)


__all__ = ["plugin", "__version__"]

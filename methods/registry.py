"""Method registry: built-ins, the ``mergecl.methods`` entry-point group, and ``--plugins`` files.

A third-party package registers a method by declaring, in its ``pyproject.toml``::

    [project.entry-points."mergecl.methods"]
    my-merge = "my_package.my_merge:MyMerge"

and a one-file experiment is loaded with ``mergecl run --plugins path/to/file.py``: every
:class:`~mergecl.methods.base.MergeMethod` subclass with a ``name`` defined in that file is registered.
Nothing else is ever imported: a config can only name registered methods.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from mergecl.methods.base import MergeMethod

ENTRY_POINT_GROUP = "mergecl.methods"

BUILTINS: dict[str, str] = {
    "seqft": "mergecl.methods.seqft:SeqFT",
    "joint": "mergecl.methods.joint:Joint",
    "avg": "mergecl.methods.avg:ModelAveraging",
    "coma": "mergecl.methods.coma:CoMA",
    "dare": "mergecl.methods.dare:DareMerge",
    "pnm": "mergecl.methods.pnm:PerturbAndMerge",
    "magmax": "mergecl.methods.magmax:MagMax",
    "ties": "mergecl.methods.ties:TiesMerge",
    "random-mix": "mergecl.methods.random_mix:RandomMix",
    "task-arithmetic": "mergecl.methods.task_arithmetic:TaskArithmetic",
    "opcm": "mergecl.methods.opcm:OPCM",
    "dop": "mergecl.methods.dop:DOP",
    "became": "mergecl.methods.became:BECAME",
    "trm": "mergecl.methods.trm:TRM",
    "ewc": "mergecl.methods.ewc:EWC",
    "lwf": "mergecl.methods.lwf:LwF",
}

ALIASES: dict[str, tuple[str, dict]] = {
    "c-ta": ("task-arithmetic", {"lam": 0.3}),
    "c-ties": ("ties", {"mode": "continual", "lam": 0.5, "merge_function": "sum"}),
    "magmax-ind": ("magmax", {"variant": "ind"}),
}
"""FusionBench's names for its continual baselines → (mergecl method, hyper-parameters), so that
numbers can be put side by side: C-TA (continual task arithmetic, λ = 0.3), C-TIES (pairwise
continual TIES, λ = 0.5, disjoint sum), MagMax-Ind (every task trained from θ₀); the values are
FusionBench's configs'."""

_extra: dict[str, type[MergeMethod]] = {}


class UnknownMethodError(ValueError):
    pass


def _import(target: str) -> type[MergeMethod]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
        raise TypeError(f"{target} is not a MergeMethod subclass")
    return cls


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Register a method class under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, MergeMethod)) or not cls.name:
        raise TypeError(f"{cls!r} must be a MergeMethod subclass with a non-empty `name`")
    _extra[cls.name] = cls
    return cls


PLUGINS_ENV = "MERGECL_PLUGINS"
"""Plugin files loaded in this process (``os.pathsep``-separated absolute paths). Worker
processes — the local pool, Ray, SLURM — inherit the environment and load them on first lookup,
so a ``--plugins`` method runs under every executor."""

_loaded_files: set[str] = set()


def load_plugin_file(path: str | Path) -> list[str]:
    """Import one Python file and register the MergeMethod subclasses it defines; the file is
    added to ``$MERGECL_PLUGINS`` so that worker processes register it too."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise UnknownMethodError(f"--plugins {str(path)!r}: not a .py file")
    resolved = str(path.resolve())
    _loaded_files.add(resolved)
    listed = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p]
    if resolved not in listed:
        os.environ[PLUGINS_ENV] = os.pathsep.join([*listed, resolved])
    module_name = f"mergecl_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UnknownMethodError(f"--plugins {str(path)!r}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    names = []
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, MergeMethod) and value.__module__ == module_name and value.name:
            register(value)
            names.append(value.name)
    if not names:
        raise UnknownMethodError(f"--plugins {str(path)!r} defines no MergeMethod subclass with a `name`")
    return names


def _load_inherited_plugins() -> None:
    """Register the plugin files a parent process loaded (``$MERGECL_PLUGINS``)."""
    for path in os.environ.get(PLUGINS_ENV, "").split(os.pathsep):
        if path and path not in _loaded_files:
            load_plugin_file(path)


def available() -> list[str]:
    _load_inherited_plugins()
    return sorted(set(BUILTINS) | set(_entry_points()) | set(_extra))


def resolve_alias(name: str, params: dict | None = None) -> tuple[str, dict]:
    """(method, params) of ``name``: an alias's method with its hyper-parameters under
    ``params`` (which win), or ``name`` itself."""
    if name in ALIASES:
        method, preset = ALIASES[name]
        return method, {**preset, **(params or {})}
    return name, dict(params or {})


def get_method(name: str) -> type[MergeMethod]:
    if name in ALIASES:
        return get_method(ALIASES[name][0])
    if name in _extra:
        return _extra[name]
    if name in BUILTINS:
        return _import(BUILTINS[name])
    _load_inherited_plugins()
    if name in _extra:
        return _extra[name]
    eps = _entry_points()
    if name in eps:
        cls = eps[name].load()  # type: ignore[attr-defined]
        if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
            raise UnknownMethodError(f"entry point {name!r} does not point at a MergeMethod subclass")
        return cls
    raise UnknownMethodError(f"unknown method {name!r}; accepted: {', '.join(available())} "
                             f"(aliases: {', '.join(sorted(ALIASES))})")

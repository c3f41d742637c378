"""mergecl — a benchmarking harness for model-merging continual learning.

The distribution installs one import name, ``mergecl``:

* :mod:`mergecl.methods` — every method as an Avalanche strategy plugin over a pure merging core;
* :mod:`mergecl.bench` — config → grid → runner → store → reporting, and the ``mergecl`` command.
"""

__version__ = "0.2.0"

"""mergecl benchmarking harness: configs, grid, result store, runner, metrics, tables and plots."""

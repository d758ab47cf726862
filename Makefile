# selfserve — the two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.ray-installed

.PHONY: setup demo test bench check clean

# The install compiles the simulator's hot path with mypyc (setup.py): a compiled module
# shadows its .py, so editing one of these sources must rebuild (selfserve.native_build
# refuses a stale build at import). A superset of native_build.COMPILED_MODULES.
NATIVE_SOURCES := setup.py src/selfserve/native_build.py src/selfserve/perf/model.py \
	$(wildcard src/selfserve/engine/*.py) $(wildcard src/selfserve/sim/*.py)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@$(BIN)/python -c "from selfserve.native_build import describe_build; print(describe_build())"
	@touch $(STAMP)

setup: $(STAMP)

# The tests also run `selfserve tune --ray local` on a local Ray (the optional extra): a
# platform without a Ray wheel skips that one test and says so here.
$(RAY_STAMP): $(STAMP)
	@$(BIN)/python -m pip install -q -e '.[dev,ray]' \
		|| echo "selfserve: Ray (optional extra) did not install; its test will be skipped"
	@touch $(RAY_STAMP)

demo: $(STAMP)
	$(BIN)/selfserve demo --out out/demo

test: $(RAY_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

check: $(RAY_STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info src/selfserve/native_build.json
	find src -name '*.so' -delete

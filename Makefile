# Every target makes and fills its own virtual environment; nothing installed by hand is used.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two install levels, each with its own stamp: the demo needs the runtime and PyTorch only;
# everything else (tests, checks, benches) needs the development tools as well. Both pin
# every version with constraints.txt.
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
# Wheels of the runtime dependencies, so tests/test_wheel.py installs a built wheel into a
# fresh venv without reaching the package index.
WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: demo test test-slow fuzz crash-soak check fmt clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[torch]'
	touch $(DEMO_STAMP)

# dev includes the torch extra, so a full install also satisfies the demo's stamp
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip download --quiet --only-binary=:all: -c constraints.txt -d $(WHEELHOUSE) .
	touch $(DEMO_STAMP) $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/digits_cnn/demo.py

test: $(STAMP)
	$(BIN)/pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/pytest -m slow -q

# new random seeds each run (the test suite under CI=true replays one fixed seed)
FUZZ_RUNS ?= 5
fuzz: $(STAMP)
	for i in $$(seq $(FUZZ_RUNS)); do env -u CI $(BIN)/pytest -q -p no:cacheprovider tests/test_fuzz.py || exit 1; done

# the 220-kill crash-safety test CRASH_RUNS times, each with a new seed, to find rare failures
CRASH_RUNS ?= 20
crash-soak: $(STAMP)
	for i in $$(seq $(CRASH_RUNS)); do \
		seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); echo "SPOTRUN_CRASH_SEED=$$seed"; \
		SPOTRUN_CRASH_SEED=$$seed $(BIN)/pytest -q -p no:cacheprovider tests/test_crash_safety.py -k 200_sigkills || exit 1; \
	done

check: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests examples bench
	$(BIN)/ruff check --fix src tests examples bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache

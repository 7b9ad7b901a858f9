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

.PHONY: demo test test-slow fuzz crash-soak soak bench check fmt clean

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

# every randomized suite SOAK_RUNS times, each run with new seeds (CI replays fixed ones);
# a failure prints the SPOTRUN_*_SEED=... that replays it
SOAK_RUNS ?= 5
SOAK_SEEDS := SPOTRUN_RESUME_SEED SPOTRUN_XGB_RESUME_SEED SPOTRUN_CRASH_SEED SPOTRUN_KILL_SEED \
	SPOTRUN_DDP_SEED SPOTRUN_FUZZ_SEED SPOTRUN_LOGS_SEED
SOAK_TESTS := tests/test_exact_resume.py tests/test_exact_resume_xgboost.py \
	tests/test_crash_safety.py tests/test_toolkit_ddp.py tests/test_fuzz.py tests/test_store_concurrency.py \
	tests/test_toolkit.py::test_sigkill_at_random_moments_never_leaves_a_partial_checkpoint
soak: $(STAMP)
	for i in $$(seq $(SOAK_RUNS)); do \
		echo "soak run $$i of $(SOAK_RUNS)"; \
		env -u CI $(addprefix -u ,$(SOAK_SEEDS)) $(BIN)/pytest -q -p no:cacheprovider \
			-m "not slow" $(SOAK_TESTS) || exit 1; \
	done

# every bench in bench/, each printing its figures with their targets; fails on a miss
BENCHES := $(sort $(wildcard bench/*.py))
bench: $(STAMP)
	status=0; for b in $(BENCHES); do \
		echo "== $$b"; $(BIN)/python $$b || { echo "== $$b: target missed"; status=1; }; \
	done; exit $$status

check: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy
	$(BIN)/python scripts/vendor_console.py --check
	$(BIN)/python scripts/sagemaker_model.py --check

fmt: $(STAMP)
	$(BIN)/ruff format src tests examples bench
	$(BIN)/ruff check --fix src tests examples bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache

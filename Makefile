# edgeq: `make demo` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeq-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test test-fast test-arm64 bench lint clean

$(STAMP): pyproject.toml device/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e './device[litert]' -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out out/demo

# The emulated Raspberry Pis (tests/arm64) always run: tests/setup_system.sh installs qemu >= 10
# and the roots are built on the host when missing (about a minute each, side by side, cached under
# ~/.cache/edgeq, keyed on the recipe), in the background while both sessions start. They run
# beside the rest: qemu emulates one core's work while the host tests share the cores in two
# workers (each test file on one worker, so its module fixtures are built once). The emulated
# Pis' output follows the host tests', with its wall time; skips are listed in each summary (-ra).
# EDGEQ_TEST_CACHE lets the sessions share the models that take long to train (tests/conftest.py).
# Under CI=true (.ci/run) a skip for want of something the suite installs is a failure.
PI_OSES := bookworm trixie bookworm-armhf
# Host test workers: one per core (the emulated Pis run beside them in a process of their own).
HOST_WORKERS ?= 2
# Each test process's TensorFlow (and OpenMP) computes on one thread, as a sweep's local workers do
# (edgeq/sweeps/runners.py): the suite's processes already fill the cores, and a pool per process as
# wide as the machine only spins and switches (measured on the clustering test, alone: 8% less CPU
# time and 8% less wall time).
test test-fast test-arm64: export TF_NUM_INTRAOP_THREADS := 1
test test-fast test-arm64: export OMP_NUM_THREADS := 1
test: $(STAMP)
	bash tests/setup_system.sh
	@mkdir -p out
	@export EDGEQ_TEST_CACHE=$$(mktemp -d "$$PWD/out/test-cache.XXXXXX") HOST_PY=$(PY); \
	( t0=$$(date +%s); for os in $(PI_OSES); do EDGEQ_PI_OS=$$os bash scripts/arm64_rootfs.sh build >/dev/null & done; wait; \
	  $(PY) -m pytest -q -p no:cacheprovider --durations=8 -m arm64 tests/arm64 $(PYTEST_ARGS); rc=$$?; \
	  echo "emulated Pis: $$(( $$(date +%s) - t0 )) s (root builds included)"; exit $$rc ) > out/arm64-tests.log 2>&1 & arm=$$!; \
	$(PY) -m pytest -q -n $(HOST_WORKERS) --dist loadfile --durations=15 -m "not arm64" $(PYTEST_ARGS); host=$$?; \
	wait $$arm; arm_rc=$$?; echo "--- emulated Raspberry Pis (tests/arm64) ---"; cat out/arm64-tests.log; \
	rm -rf "$$EDGEQ_TEST_CACHE"; test $$host = 0 && test $$arm_rc = 0

# Only the emulated Raspberry Pis (building their roots when missing).
test-arm64: $(STAMP)
	bash scripts/arm64_rootfs.sh host-setup
	HOST_PY=$(PY) $(PY) -m pytest -q -m arm64 tests/arm64 $(PYTEST_ARGS)

# The inner loop (about a minute on 2 cores): no notebooks, QAT, sshd, venv installs or other slow
# end-to-end runs; one worker per core, each test file on one worker so its module fixtures are built once.
test-fast: $(STAMP)
	@mkdir -p out
	@export EDGEQ_TEST_CACHE=$$(mktemp -d "$$PWD/out/test-cache.XXXXXX"); \
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not ssh and not arm64" $(PYTEST_ARGS); rc=$$?; \
	rm -rf "$$EDGEQ_TEST_CACHE"; exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeq device tests benchmarks examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache

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

# arm64 tests run here only when the emulated Pi's root is cached (make test-arm64 builds it).
# They run beside the rest: qemu emulates one core's work while the host tests share the cores in
# two workers (each test file on one worker, so its module fixtures are built once); the slowest
# tests are listed at the end. The emulated Pi's output follows the host tests'. EDGEQ_TEST_CACHE
# lets all three sessions share the models that take long to train (tests/conftest.py).
test: $(STAMP)
	bash tests/setup_system.sh
	@mkdir -p out
	@export EDGEQ_TEST_CACHE=$$(mktemp -d "$$PWD/out/test-cache.XXXXXX"); \
	$(PY) -m pytest -q -p no:cacheprovider --durations=8 -m arm64 tests/arm64 $(PYTEST_ARGS) > out/arm64-tests.log 2>&1 & arm=$$!; \
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m "not arm64" $(PYTEST_ARGS); host=$$?; \
	wait $$arm; arm_rc=$$?; echo "--- emulated Raspberry Pi (tests/arm64) ---"; cat out/arm64-tests.log; \
	rm -rf "$$EDGEQ_TEST_CACHE"; test $$host = 0 && test $$arm_rc = 0

# Build (cold: ~8 min) and cache the Debian bookworm arm64 root, then run the emulated-Pi tests.
test-arm64: $(STAMP)
	bash scripts/arm64_rootfs.sh host-setup
	EDGEQ_ARM64_BUILD=1 $(PY) -m pytest -q -m arm64 tests/arm64 $(PYTEST_ARGS)

# The inner loop (about a minute on 2 cores): no notebooks, QAT, sshd, venv installs or other slow
# end-to-end runs; one worker per core, each test file on one worker so its module fixtures are built once.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not ssh and not arm64" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeq device tests benchmarks examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache

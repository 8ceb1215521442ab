# The two commands of the README:
#   make demo   set up, then run the example suites on the bundled zoo and write the HTML report
#   make test   set up, then run the project's own tests (TEST_WORKERS=2 xdist workers; TEST_WORKERS=0 runs them in one process)
# Set-up is a virtual environment in $(VENV) with circuitcheck installed editable.
# Without a torch already installed there, the CPU build $(TORCH) is installed first;
# users with GPUs can pass their own, e.g. `make test TORCH="torch==2.13.0 --index-url ..."`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
REPORT ?= reports/circuitcheck.html
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/python -m pytest example_suites --circuitcheck-report=$(REPORT) --circuitcheck-json=$(REPORT:.html=.json) $(PYTEST_ARGS)

test: setup
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) reports .pytest_cache

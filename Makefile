# The two commands of the README: `make demo` (the whole lifecycle) and `make test` (the suite).
# Each installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.knflow-installed

.PHONY: demo test lint bench install mutate screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/knflow demo

# The suite's tests wait on real services and subprocesses more than they compute: three workers on two cores take
# about half the time of one (docs/testing.md). Each test file runs whole in one worker, with its module fixtures.
PYTEST_WORKERS ?= 3
test: $(STAMP)
	bash scripts/system-deps.sh
	$(PY) -m ruff check .
	$(PY) scripts/check_type_ignores.py
	$(PY) -m mypy
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

# Mutation testing of the rule modules ([tool.mutmut] in pyproject.toml; docs/testing.md): slow, outside `make test`.
# Each run starts afresh (mutmut keeps a survivor's verdict even after a test that kills it is added).
# `make mutate MODULES="eventing/delivery.py serving/rollout.py"` mutates only those modules (the whole list takes long).
MUTATE_JOBS ?= 2
MODULES ?=
MUTANTS := $(foreach m,$(MODULES),'$(subst /,.,$(m:.py=)).*')
mutate: $(STAMP)
	$(PY) -m pip install -q 'mutmut>=3.8,<4'
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS) > mutants.log 2>&1 || (tail -c 3000 mutants.log; exit 1)
	$(PY) scripts/mutation_scores.py $(MODULES)

# The dashboard README's screenshots, taken again on a real tuning run (test runs write theirs to a scratch directory).
screenshots: $(STAMP)
	bash scripts/system-deps.sh
	KNFLOW_DASHBOARD_SCREENSHOTS=knflow/dashboard/screenshots $(PY) -m pytest -q tests/dashboard/test_charts_browser.py

lint: $(STAMP)
	$(PY) -m ruff check .

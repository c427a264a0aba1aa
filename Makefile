# Two commands: `make run` (set up .venv on first use, run the default job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m harness $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check harness transports policies envs reports tests
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	$(PY) -m harness.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info outputs multirun

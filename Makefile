# Two commands: `make run` (set up .venv on first use, run the default job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean chromium peers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m harness $(ARGS)

# Tests on five workers (pytest-xdist) for two cores: many tests wait on wall time (paced
# outages, timeouts, slowed simulators), so the extra workers fill the CPU they leave. Tests
# sharing a module or session fixture stay on one worker (tests/conftest.py). Each worker's
# harness runs listen on default ports of their own (HARNESS_PORT_OFFSET, tests/conftest.py);
# tests marked slow go first. One file alone: .venv/bin/python -m pytest FILE
test: $(STAMP) chromium peers
	$(PY) -m ruff check harness transports policies envs reports tests examples docs/hooks
	$(PY) -m pytest -n 5 --dist loadgroup --no-loadscope-reorder $(ARGS)

# Debian's chromium renders the HTML report in its test (tests/test_report_html.py); without
# root or apt the test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the HTML report's browser test will skip"

# The real peer servers of the remote-adapter tests (peers/README.md), each in a venv of its
# own (their numpy pins differ from ours); a no-op once built.
peers:
	bash peers/setup.sh

bench: $(STAMP)
	$(PY) -m harness.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info outputs multirun site outage-runs peers/.venv-openpi peers/.venv-vlaeval

# Two commands do everything: `make demo` runs the whole system on embedded services, `make test` runs every test.
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=78.1.1"  # the venv's own is vulnerable
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m cxstream demo $(ARGS)

soak: $(VENV)/.installed  # not part of the tests: 30 minutes of the demo, lag and memory reported
	$(PY) -m cxstream soak $(ARGS)

# pytest-xdist workers: most of the slow tests wait on real time (streams, outages), not on a core
TEST_PROCESSES ?= 2
test: $(VENV)/.installed
	bash .ci/prereqs
	$(PY) -m pytest -n $(TEST_PROCESSES) $(ARGS)

screenshots: $(VENV)/.installed  # the dashboard screenshots in README.md, from the browser test
	SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest -p no:cacheprovider tests/e2e

k8s-monitoring: $(VENV)/.installed  # deploy/k8s/monitoring.yaml from config/prometheus-alerts.yml
	$(PY) -m cxstream.devtools.k8s config/prometheus-alerts.yml deploy/k8s/monitoring.yaml

check: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy -p cxstream

audit: $(VENV)/.installed
	$(PY) .ci/audit_deps.py

format: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

.PHONY: install demo soak test screenshots k8s-monitoring check audit format

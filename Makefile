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

test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

check: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy -p cxstream

audit: $(VENV)/.installed
	$(PY) .ci/audit_deps.py

format: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

.PHONY: install demo test check audit format

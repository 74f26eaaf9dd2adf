# make demo: send all eight reports to a local SES server (no AWS account needed)
# make test: run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test clean

demo: $(VENV)/.installed
	$(PY) tests/local_ses.py

test: $(VENV)/.installed
	$(PY) -m pytest

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .demo .pytest_cache

# make demo: send all eight reports to a local SES server (no AWS account needed)
# make test: run the test suite, on every core (pytest-xdist)
# make bench: the benchmark of bench/bench.py (by hand; installs the AWS CLI it compares)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The AWS CLI pins its own botocore, older than boto3's: it gets a venv of its own.
AWS_VENV ?= .venv-awscli

.PHONY: demo test bench clean

demo: $(VENV)/.installed
	$(PY) tests/local_ses.py

test: $(VENV)/.installed
	$(PY) -m pytest -n auto

bench: $(VENV)/.installed $(AWS_VENV)/bin/aws
	$(PY) bench/bench.py --aws $(AWS_VENV)/bin/aws

$(AWS_VENV)/bin/aws:
	$(PYTHON) -m venv $(AWS_VENV)
	$(AWS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'awscli>=1.46'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) $(AWS_VENV) .demo .pytest_cache

# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned requirements first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SCALE  ?= full

.PHONY: install data run test lab clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	@touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(PY) -m helpers data

run: $(STAMP)
	SIMSEARCH_SCALE=$(SCALE) $(PY) -m helpers run

test: $(STAMP)
	SIMSEARCH_SCALE=quick $(PY) -m pytest --nbval-lax --nbval-cell-timeout=1200 tests notebooks

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

clean:
	rm -rf build data/work

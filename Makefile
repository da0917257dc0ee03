# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned requirements first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SCALE  ?= full
# Offline classroom: `make wheelhouse` downloads every pinned wheel into WHEELHOUSE;
# `make install WHEELS=build/wheelhouse` installs from that folder only, without internet.
WHEELHOUSE ?= build/wheelhouse
WHEELS ?=
PIP_SOURCE := $(if $(WHEELS),--no-index --find-links $(WHEELS))

.PHONY: install data run test browser-test practice wheelhouse lab clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(PIP_SOURCE) -r requirements.txt -e .
	@touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(PY) -m helpers data

run: $(STAMP)
	SIMSEARCH_SCALE=$(SCALE) $(PY) -m helpers run

test: $(STAMP)
	SIMSEARCH_SCALE=quick $(PY) -m pytest --nbval-lax --nbval-cell-timeout=1200 tests notebooks

# JupyterLab in headless Chromium (Debian's `chromium` package): runs notebook 10 through the page.
browser-test: $(STAMP)
	$(PY) -m pytest -m browser tests/browser

# Learner copies in build/practice/: exercise solutions removed, exercise cells blanked.
practice: $(STAMP)
	$(PY) -m helpers.practice notebooks build/practice

# `pip wheel`, not `pip download`: packages published only as source (hnswlib) are compiled here
# once, so the classroom needs no compiler; setuptools comes too, for `pip install -e .` offline.
wheelhouse:
	$(PYTHON) -m pip wheel --disable-pip-version-check --wheel-dir $(WHEELHOUSE) -r requirements.txt "setuptools>=61"
	@du -sh $(WHEELHOUSE)

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

clean:
	rm -rf build data/work

# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned requirements first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SCALE  ?= full

.PHONY: install data run test lab clean gpu-check gpu-wheels

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

# GPU machine without internet, its Python already with CUDA torch (README, "GPU"):
#   make gpu-wheels WHEELS=dir   (where the package index is reachable) then, on the GPU machine,
#   make gpu-check PY=python3 WHEELS=dir OUT=dir   (or, without make: bash .ci/gpu-check PY WHEELS OUT)
WHEELS ?= .whl
OUT    ?= build/gpu-check

gpu-wheels:
	bash .ci/gpu-wheels $(WHEELS) $(PY)

gpu-check:
	bash .ci/gpu-check $(PY) $(WHEELS) $(OUT)

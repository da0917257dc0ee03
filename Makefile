# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned requirements first when needed.
# PYTHON: the Python 3.11+ that makes .venv. VENV: an existing environment to use instead
# (e.g. VENV=$CONDA_PREFIX); only a folder made by `python -m venv` is ever deleted and rebuilt.
# SCALE: quick or full; SIMSEARCH_SCALE from the environment is honoured (SIMSEARCH_SCALE=quick make run).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SCALE  ?= $(or $(SIMSEARCH_SCALE),full)
# exits 0 when the interpreter runs, is 3.11 or newer, and has pip
HEALTHY := -c 'import sys, importlib.util; sys.exit(sys.version_info < (3, 11) or importlib.util.find_spec("pip") is None)'

# Offline classroom: `make wheelhouse` downloads every pinned wheel into WHEELHOUSE;
# `make install WHEELS=build/wheelhouse` installs from that folder only, without internet.
WHEELHOUSE ?= build/wheelhouse
WHEELS ?=
PIP_SOURCE := $(if $(WHEELS),--no-index --find-links $(WHEELS))

.PHONY: install data haystack-data run test browser-test practice assignments site wheelhouse lab clean gpu-check gpu-wheels FORCE

# a venv that no longer runs (Python removed or upgraded under it) is rebuilt even when its
# stamp looks up to date
ifneq ($(shell $(PY) $(HEALTHY) 2>/dev/null && echo ok),ok)
$(STAMP): FORCE
endif

REQUIREMENTS := requirements.txt requirements-scale.txt requirements-bench.txt requirements-dev.txt requirements-teach.txt

$(STAMP): $(REQUIREMENTS) pyproject.toml
	@if $(PY) $(HEALTHY) 2>/dev/null; then :; \
	elif [ -e $(VENV) ] && [ ! -f $(VENV)/pyvenv.cfg ]; then \
	    echo "error: $(VENV) cannot be used (it needs Python 3.11+ with pip) and was not made by" \
	         "python -m venv, so it is left alone; fix it or choose another VENV" >&2; exit 1; \
	else \
	    $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	        echo "error: the course needs Python 3.11 or newer; $(PYTHON) is" \
	             "$$($(PYTHON) --version 2>&1 || echo 'not found'). Install one and run e.g." \
	             "make $(or $(MAKECMDGOALS),install) PYTHON=python3.11" >&2; exit 1; }; \
	    if [ -e $(VENV) ]; then echo "$(VENV) is broken (its Python will not run, is older than" \
	        "3.11 or lacks pip): making it again"; rm -rf $(VENV); fi; \
	    echo "making $(VENV) with $$($(PYTHON) --version)"; \
	    $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; \
	fi
	@echo "installing the pinned requirements into $(VENV) (see README: several GB with the default torch, minutes)"
	@# --no-compile, then compileall on every core: pip compiles torch's bytecode on one core
	@# (95 s + 35 s instead of 150-171 s on a 2-core machine). Not compiling at all costs far more
	@# where PYTHONDONTWRITEBYTECODE is set (as on the course's build machine): every process would
	@# compile its imports again.
	$(PY) -m pip install --disable-pip-version-check --progress-bar on --no-compile $(PIP_SOURCE) $(addprefix -r ,$(REQUIREMENTS)) -e .
	@# as pip does, files that do not compile (torch ships a test file in Python 3.12 syntax) are skipped
	@echo "compiling the installed packages' bytecode on every core"
	@$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null 2>&1 || :
	@touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(PY) -m helpers data

# Debian's two real image sets: SIMSEARCH_HAYSTACK=real and benchmarks/bench_haystack.py (needs root)
haystack-data:
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist openclipart-png

run: $(STAMP)
	SIMSEARCH_SCALE=$(SCALE) $(PY) -m helpers run

# helpers/__main__.py's TEST_COMMAND: notebooks in quick scale and the unit tests, on two workers
test: $(STAMP)
	$(PY) -m helpers test

# JupyterLab in headless Chromium (Debian's `chromium` package): runs notebook 10 through the page.
browser-test: $(STAMP)
	$(PY) -m pytest -m browser tests/browser

# Learner copies in build/practice/: exercise solutions removed, exercise cells blanked.
practice: $(STAMP)
	$(PY) -m helpers.practice notebooks build/practice

# nbgrader assignments in build/nbgrader/ (source/ and release/, one per notebook; needs the extra
# "teach"). CHECK=1 also autogrades every teacher's copy (full marks) and blank copy (0) in quick
# scale, in build/nbgrader-check/.
assignments: $(STAMP)
	$(PY) -m helpers.assignments notebooks build/nbgrader $(if $(CHECK),--check)

# The course as a website in build/site/html/ from the notebooks `make run` executed (build/notebooks/),
# built offline (Sphinx, myst-nb, sphinx-book-theme: the extra "teach"); fails on a build warning, a
# broken link or anything a page would fetch from another host.
site: $(STAMP)
	$(PY) -m helpers.site build/notebooks build/site

# `pip wheel`, not `pip download`: packages published only as source (hnswlib) are compiled here
# once, so the classroom needs no compiler; setuptools comes too, for `pip install -e .` offline.
wheelhouse:
	$(PYTHON) -m pip wheel --disable-pip-version-check --wheel-dir $(WHEELHOUSE) $(addprefix -r ,$(REQUIREMENTS)) "setuptools>=61"
	@du -sh $(WHEELHOUSE)

# the BLAS kernels helpers.blas chooses for this CPU, for Jupyter and every kernel it starts
lab: $(STAMP)
	env $$($(PY) -c 'import helpers.blas as b; k = b.choose_kernels(); print(f"{b.VARIABLE}={k}" if k else "")') \
	    $(PY) -m jupyter lab notebooks/

clean:
	rm -rf build data/work

# GPU machine without internet, its Python already with CUDA torch (README, "GPU"):
#   make gpu-wheels WHEELS=dir   (where the package index is reachable) then, on the GPU machine,
#   make gpu-check PY=python3 WHEELS=dir OUT=dir   (or, without make: bash .ci/gpu-check PY WHEELS OUT)
OUT    ?= build/gpu-check

gpu-wheels:
	bash .ci/gpu-wheels $(or $(WHEELS),.whl) $(PY)

gpu-check:
	bash .ci/gpu-check $(PY) $(or $(WHEELS),.whl) $(OUT)

FORCE:

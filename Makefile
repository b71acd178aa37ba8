# cifarlab - the commands a user needs:
#   make run-all    run the whole lab (notebooks via papermill) on the default classes
#   make test       run the fast tests (a few minutes): after every change
#   make test-all   run every test (browser, JupyterLab, ipywidgets 7, Ray cluster, the whole suite): CI
# Each sets up a local virtual environment first (make setup).
#   make lab        JupyterLab from that environment, to run the notebooks by hand

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
KERNEL ?= cifarlab

# make run-all parameters, e.g.  make run-all CLASSES="apple otter pickup_truck" SEEDS=3
OUT             ?= out
CLASSES         ?= 0 55 58
SEEDS           ?= 2
MODELS          ?= improved template
POOLINGS        ?= stride max avg
EPOCHS          ?=
TEMPLATE_EPOCHS ?= 150
DATA_DIR        ?=
# FORCE: 1/true/yes/on retrains runs whose records exist; 0/false/no/off or empty reuses them
FORCE           ?=

# make sweep parameters (MODELS, POOLINGS, SEEDS, EPOCHS, TEMPLATE_EPOCHS, DATA_DIR, FORCE as above), e.g.
#   make sweep SUBSETS="0,55,58 vehicles_1" ENGINE=ray SEEDS=3
# SUBSETS: class subsets, space-separated, each comma-separated (default: CLASSES as one subset);
# ENGINE: local (one run at a time) or ray (a local Ray on 127.0.0.1, or the cluster at ADDRESS);
# ADDRESS: a Ray cluster's HOST:PORT (default $RAY_ADDRESS).
SUBSETS         ?=
ENGINE          ?= local
ADDRESS         ?=
CPUS_PER_RUN    ?=
GPUS_PER_RUN    ?=
SWEEP_OUT       ?= $(OUT)/sweep

comma := ,
empty :=
space := $(empty) $(empty)
SWEEP_SUBSETS = $(or $(strip $(SUBSETS)),$(subst $(space),$(comma),$(strip $(CLASSES))))

.PHONY: setup test test-all run-all sweep bench web web-deps clean distclean lab user-kernel notebooks nbfilter

setup: $(VENV)/.installed

# What running the lab needs (pyproject's dependencies), nothing for tests, JupyterLab or sweeps: those are
# extras that their own targets add (make test, make lab, make sweep ENGINE=ray). TORCH optionally pins torch
# first (CI pins the build this machine image carries), e.g. make setup TORCH="torch==2.14.1 torchvision==0.29.1".
TORCH ?=
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(PY) -m pip install -q $(TORCH))
	$(PY) -m pip install -q -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (cifarlab)" >/dev/null
	@$(MAKE) --no-print-directory nbfilter
	@touch $@
	@echo "setup done: $(VENV), with its own Jupyter kernel '$(KERNEL)' (inside $(VENV): another clone's"
	@echo "setup cannot repoint it). Run the notebooks by hand with: make lab"

# An extra on top of setup, once per venv (again when pyproject.toml changes): $(VENV)/.EXTRA-installed
$(VENV)/.%-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[$*]'
	@touch $@

# Jupyter's autosave writes outputs and widget state into the notebooks: a git clean filter
# (.gitattributes) commits them without (scripts/nbtool.py clean); the files on disk keep their outputs.
nbfilter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git config filter.cifarlab-notebooks.clean '$(PYTHON) scripts/nbtool.py clean' && \
		echo "git filter cifarlab-notebooks set: notebooks are committed without outputs"; fi

# JupyterLab from the project's venv: its widget front end matches the kernel's ipywidgets 8, and a
# notebook's "python3" kernel is this venv's Python (nothing to pick by hand).
# More options: make lab LAB_ARGS="--port 8890 --no-browser"
LAB_ARGS ?=
lab: $(VENV)/.lab-installed
	$(PY) -m jupyterlab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

# For a Jupyter installed elsewhere (it needs ipywidgets 8's front end: JupyterLab 4 or Notebook 7):
# a per-user kernel whose name is this clone's own, so two clones never repoint each other's.
USER_KERNEL = cifarlab-$(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)
user-kernel: setup
	@$(PY) -m ipykernel install --user --name "$(USER_KERNEL)" --display-name "Python (cifarlab: $(CURDIR))" && \
	echo "in your Jupyter pick the kernel 'Python (cifarlab: $(CURDIR))'"

# The notebooks' Colab badges and install cells, from pyproject.toml's [project.urls] Repository.
notebooks:
	$(PYTHON) scripts/nbtool.py sync

# The test tools (pytest, playwright, the pinned JupyterLab, Ray, ruff: the test extra) come with the tests.
# The tiers are pytest markers (pyproject.toml): make test leaves out the tests marked slow (browser, Ray
# cluster, ipywidgets 7, the whole notebook suite, the Colab-versions environment); make test-all runs them all.
# The fast tier runs on TEST_WORKERS processes (pytest-xdist; default: the cores, at most 4), each test's torch on
# one thread (tests/conftest.py): the tests are small, so two at once use two cores better than one test on two.
# The slow tier then runs alone: its Ray clusters, browsers and Ctrl-C tests want the machine to themselves; it
# lists its ten slowest tests, so a CI log shows where its ~15 minutes go.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: $(VENV)/.test-installed
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS)

test-all: $(VENV)/.test-installed
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS)
	$(PY) -m pytest -m slow --durations=10

run-all: setup
	$(PY) scripts/run_all.py --out "$(OUT)" --classes "$(CLASSES)" --seeds "$(SEEDS)" \
		--models "$(MODELS)" --poolings "$(POOLINGS)" --kernel $(KERNEL) \
		$(if $(EPOCHS),--epochs "$(EPOCHS)") $(if $(TEMPLATE_EPOCHS),--template-epochs "$(TEMPLATE_EPOCHS)") \
		$(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(if $(strip $(FORCE)),--force "$(strip $(FORCE))")

# ENGINE=ray adds Ray (the ray extra, ~240 MB) to the venv first.
sweep: setup $(if $(filter ray,$(strip $(ENGINE))),$(VENV)/.ray-installed)
	$(PY) -m cifarlab sweep $(foreach s,$(SWEEP_SUBSETS),--classes "$(s)") --models $(MODELS) --poolings $(POOLINGS) \
		--seeds "$(SEEDS)" --engine $(strip $(ENGINE)) --out "$(SWEEP_OUT)" \
		$(if $(EPOCHS),--epochs "$(EPOCHS)") $(if $(TEMPLATE_EPOCHS),--template-epochs "$(TEMPLATE_EPOCHS)") \
		$(if $(strip $(ADDRESS)),--address $(strip $(ADDRESS))) $(if $(strip $(CPUS_PER_RUN)),--cpus-per-run $(CPUS_PER_RUN)) \
		$(if $(strip $(GPUS_PER_RUN)),--gpus-per-run $(GPUS_PER_RUN)) $(if $(strip $(FORCE)),--force "$(strip $(FORCE))") \
		$(if $(DATA_DIR),--data-dir "$(DATA_DIR)")

bench: setup
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/accuracy.py
	$(PY) benchmarks/precision.py

# The browser page (web/): classify your own image with the exported model.
web-deps: web/node_modules/.package-lock.json
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund

# The server shows this folder: OUT inside it (a relative WEB_OUT) has an address; OUT elsewhere (absolute, or
# ~ that only the shell expands) has its files picked by hand.
WEB_OUT = $(patsubst $(CURDIR)/%,%,$(abspath $(OUT)))
web: web-deps
ifeq ($(filter /% ~%,$(WEB_OUT)),)
	@echo "open http://127.0.0.1:8000/web/?model=/$(WEB_OUT)/<experiment>/best/model.onnx&classes=/$(WEB_OUT)/<experiment>/best/classes.json"
	@echo "(make run-all prints the exact address for its experiment, e.g. $(WEB_OUT)/apple-otter-pickup_truck)"
	@echo "(or open http://127.0.0.1:8000/web/ and pick model.onnx and classes.json yourself; Ctrl-C stops)"
else
	@echo "open http://127.0.0.1:8000/web/ and pick model.onnx and classes.json from $(OUT)/<experiment>/best"
	@echo "(this server shows this folder only, and OUT=$(OUT) is outside it; Ctrl-C stops)"
endif
	$(PYTHON) -m http.server --bind 127.0.0.1 8000

# Build leftovers and caches only: results (OUT, runs/, best/ folders) are yours; delete them by hand.
clean:
	rm -rf .pytest_cache build *.egg-info
	find . -path ./$(VENV) -prune -o -path ./web/node_modules -prune -o -name __pycache__ -type d -prune \
		-exec rm -rf {} +

# ... and the venv, with this clone's `make user-kernel` kernel, which would point at the deleted venv.
distclean: clean
	@if [ -x "$(PY)" ] && $(PY) -m jupyter kernelspec list 2>/dev/null | grep -q "^ *$(USER_KERNEL) "; then \
		$(PY) -m jupyter kernelspec remove -y "$(USER_KERNEL)" >/dev/null && echo "removed the kernel $(USER_KERNEL)"; fi
	rm -rf $(VENV) web/node_modules .test-cache

# Two commands: `make run` (JupyterLab on the quick-start notebook) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-test system-test-deps workshop-data fast-malloc bench-deps lint clean

$(VENV)/.installed: pyproject.toml
	@# Debian's python3 needs python3-venv for `-m venv`; install it when missing.
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q python3-venv && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-workshop: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[workshop]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

system-test-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/datasets/fashion-mnist ] || \
		[ ! -x /usr/bin/curl ] || ! ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || \
		! command -v c++ >/dev/null; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium \
			dataset-fashion-mnist curl libtcmalloc-minimal4 g++; \
	fi

# Benchmarks only (not the tests): real photos for benchmarks/photo_set.py, about 300 MB,
# and the colour emoji font that benchmarks/drawn_set.py draws from, about 10 MB.
bench-deps:
	$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
		--no-install-recommends tuxpaint-stamps-default gcompris-qt-data fonts-noto-color-emoji

# The workshop notebooks' offline data (Fashion-MNIST from Debian); best effort for `run`.
workshop-data:
	@[ -d /usr/share/datasets/fashion-mnist ] || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q dataset-fashion-mnist; } || \
		echo "notebooks/04 needs Fashion-MNIST: sudo apt-get install dataset-fashion-mnist"

# tcmalloc for the kernels: XLA's CPU training runs 1.3-1.6x faster on it; a C++ compiler
# for platform/cpu_kernels.py (EfficientNet fine-tuning 1.4x faster). Both best effort.
fast-malloc:
	@ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q libtcmalloc-minimal4; } || \
		echo "faster CPU training: sudo apt-get install libtcmalloc-minimal4"
	@command -v c++ >/dev/null || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q g++; } || \
		echo "faster CPU fine-tuning (platform/cpu_kernels.py): sudo apt-get install g++"

# default_url: the printed URL and the browser tab land on the notebook, not the Launcher.
# The server, and the kernels it starts, run on tcmalloc where it is installed
# (runtime.preload_command; IMGCLASS_MALLOC=glibc keeps glibc's malloc).
run: $(VENV)/.installed-workshop workshop-data fast-malloc
	@echo "The command line: source $(VENV)/bin/activate puts jupyter-imgclass on PATH"
	$(shell $(PY) -c 'from jupyter_imgclass.platform.runtime import preload_command; print(preload_command())' 2>/dev/null) \
		$(PY) -m jupyter lab --ip=127.0.0.1 $(if $(SUDO),,--allow-root) \
		--LabApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb $(LAB_ARGS)

test: install-test system-test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-test
	$(PY) -m ruff check jupyter_imgclass tests benchmarks
	$(PY) -m ruff format --check jupyter_imgclass tests benchmarks

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache

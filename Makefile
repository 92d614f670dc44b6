# modeconn — the two commands a new user needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.modeconn-installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup system test demo bench lint clean

setup: $(STAMP) system

# torch is installed first and pinned only when no torch is importable: on a CPU machine with the
# 2.13.0 wheel on disk that takes the CPU build; elsewhere the normal build for the platform.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# torchattacks is only an independent reference in tests; its declared deps would pull torchvision.
	$(PIP) install -q --no-deps torchattacks
	touch $(STAMP)

# System packages, when missing and apt is usable as root: Fashion-MNIST (the default data set)
# and Chromium (the test that renders the HTML report). Elsewhere: a hint, and those tests skip.
system:
	@need=""; \
	ls $(FMNIST)/*idx*-ubyte* >/dev/null 2>&1 || [ -n "$$MODECONN_DATA" ] || need="$$need dataset-fashion-mnist"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need="$$need chromium"; \
	if [ -z "$$need" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing$$need with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$need >/dev/null; \
	else echo "missing$$need: install them (Debian packages) or set MODECONN_DATA; dependent tests skip"; fi

test: setup
	$(PY) -m pytest

demo: setup
	$(VENV)/bin/modeconn demo --out runs/demo

bench: setup
	$(PY) -m benchmarks.run

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

# The README's set-up is two commands: `make demo` and `make test`. Both run `setup` first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.hcl-installed
FAST   ?= 1

.PHONY: setup demo test lint test-fast bench notebooks clean system-packages

setup: $(STAMP) system-packages

# Torch is pinned here (not in pyproject.toml, which only has lower bounds) so that the
# local-disk wheels are used; the project itself installs editable with its dev extra, which brings
# every other extra (notebooks, numba, study): setup installs everything.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Debian packages: Fashion-MNIST (the default data), WordNet (optional hierarchy source),
# Chromium + driver (browser tests). Skipped quietly where apt-get or root is unavailable.
DEB_PACKAGES := dataset-fashion-mnist wordnet-base chromium chromium-driver
system-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: cannot install Debian packages ($$missing); tests that need them are skipped"; \
	fi

demo: setup
	$(PY) -m hcl demo --out runs/demo

test: setup lint
	HCL_FAST=$(FAST) $(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# ruff (configured in pyproject.toml): lint, and the formatter's check, on the code and the tests.
lint: setup
	$(VENV)/bin/ruff check hcl tests benchmarks
	$(VENV)/bin/ruff format --check hcl tests benchmarks

bench: setup
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_sampler.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs data/cache .pytest_cache

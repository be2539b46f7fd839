# Two entry points (see README): `make demo` runs the main job, `make test` passes the tests.
# Both create or reuse .venv; a change of pyproject.toml reinstalls.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_PIN := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint system-deps clean mmcv-wheel mmdet3d

demo: $(VENV)/.core-installed
	$(VENV)/bin/autolabel demo

test: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

# open3d needs libusb-1.0 at import time (Debian package libusb-1.0-0).
system-deps:
	@if ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then \
		echo "installing libusb-1.0-0 (needed by open3d)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first from its pinned CPU wheel, so the project's range installs nothing bigger.
$(VENV)/.core-installed: pyproject.toml | system-deps $(VENV)/bin/python
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.core-installed
	$(PIP) install -q -e ".[test]"
	touch $@

# mmdet3d 1.4 needs full mmcv 2.1.0 with compiled ops, which has no wheel for this torch: build it once
# (about 20-30 min on 2 cores) into wheelhouse/ and reuse it. The wheel is tied to the installed torch.
WHEELHOUSE ?= wheelhouse
MMCV_WHEEL = $(firstword $(wildcard $(WHEELHOUSE)/mmcv-2.1.0-*.whl))

mmcv-wheel: $(VENV)/.core-installed
	@if [ -n "$(MMCV_WHEEL)" ]; then echo "reusing $(MMCV_WHEEL)"; else \
		$(PIP) install -q "setuptools<81" wheel ninja psutil && \
		MMCV_WITH_OPS=1 FORCE_CUDA=0 $(PIP) wheel --no-build-isolation --no-deps -w $(WHEELHOUSE) mmcv==2.1.0; fi

# Unconstrained, mmdet3d's requirements would replace numpy (2.x), the devkit (1.1), shapely and opencv: the extra
# is installed under the core environment's own versions (opencv-python pinned to the headless build's version).
mmdet3d: mmcv-wheel
	$(PIP) freeze --exclude-editable | grep -v '^autolabel' > $(VENV)/core-constraints.txt
	sed -n 's/^opencv-python-headless==/opencv-python==/p' $(VENV)/core-constraints.txt >> $(VENV)/core-constraints.txt
	$(PIP) install -q -c $(VENV)/core-constraints.txt --find-links $(WHEELHOUSE) -e ".[test,mmdet3d]"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

# The whole set-up on a fresh machine is `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp compiles with every core; pip caches the wheel afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: run test install lint bench clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server,front,ops,router,test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium drives the browser tests (Playwright never downloads a browser);
# the CJK font lets it draw the Chinese UI; iproute2 and iptables serve the doctor's namespace tests.
browser:
	@dpkg -s chromium fonts-wqy-microhei iproute2 iptables >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei iproute2 iptables >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium" >&2; fi; }

run: install
	$(BIN)/clawlan run

test: install browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

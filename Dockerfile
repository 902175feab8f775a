# syntax=docker/dockerfile:1
# The shopsearch HTTP service (`shopsearch serve`) on a slim Python: the `serve` extra and the
# query path only (onnxruntime's CPU build, no torch, no CUDA), run as an unprivileged user.
# docs/deploy.md has the details; this machine has no Docker engine, so the image is linted
# here (hadolint, tests/test_deploy.py) and built where Docker runs:
#
#   docker build -t shopsearch .                  # the model is mounted at /models at run time
#   docker build --target baked -t shopsearch .   # models/all-MiniLM-L6-v2 copied into the image
#
# The model is exported outside the image (`shopsearch model export --out
# models/all-MiniLM-L6-v2` needs torch, which the image leaves out).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtual environment holding shopsearch[serve] -----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/shopsearch
WORKDIR /src
COPY pyproject.toml README.md MANIFEST.in ./
COPY docs/DESIGN.md docs/
COPY shopsearch/ shopsearch/
# The base dependencies and the serve extra come as wheels. The check fails the build should
# any of them ever pull torch (several GB with its CUDA libraries).
RUN /opt/shopsearch/bin/pip install --no-cache-dir ".[serve]" \
    && /opt/shopsearch/bin/python -c \
    "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

# -- runtime: the environment, an unprivileged user, nothing else ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 shopsearch \
    && useradd --system --uid 10001 --gid shopsearch --create-home --home-dir /home/shopsearch \
    shopsearch \
    && mkdir -p /models /data \
    && chown shopsearch:shopsearch /data
COPY --from=build /opt/shopsearch /opt/shopsearch
# SHOPSEARCH_MODEL_DIR: a model mounted at /models (read-only) or baked in by --target baked.
# SHOPSEARCH_DATA_DIR: embedded collections, when no QDRANT_URL names a server.
ENV PATH=/opt/shopsearch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHOPSEARCH_MODEL_DIR=/models/all-MiniLM-L6-v2 \
    SHOPSEARCH_DATA_DIR=/data
USER 10001:10001
WORKDIR /home/shopsearch
EXPOSE 8000
# /healthz answers once the model is loaded and the collection open; loading takes seconds.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Any other command runs in its place: `docker run IMAGE ingest /catalog/products.parquet ...`.
ENTRYPOINT ["shopsearch"]
CMD ["serve", "--host", "0.0.0.0"]

# -- baked: the runtime with the exported model inside (docker build --target baked) ----------
FROM runtime AS baked
COPY models/all-MiniLM-L6-v2/ /models/all-MiniLM-L6-v2/

# -- service: the default target, the model mounted at /models --------------------------------
FROM runtime AS service

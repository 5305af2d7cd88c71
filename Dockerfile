# The glorot image: API, worker and migrations run from it (docker-compose.yml).
#   CPU:  docker build -t glorot .
#   GPU:  docker build -t glorot --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
# The CUDA runtime comes with the torch wheel; the host needs only the NVIDIA driver and the
# NVIDIA Container Toolkit (for the worker's GPU reservation).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GLOROT_HOME=/var/lib/glorot

# torch first, from the chosen index, so the project's install does not pull another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY glorot_core ./glorot_core
COPY jobs ./jobs
COPY api ./api
COPY worker ./worker
COPY glorot_service ./glorot_service
COPY migrations ./migrations
COPY alembic.ini ./
# Editable: the code (and migrations/, which Alembic reads as files) stays under /app.
RUN pip install -e .

# Never run as root: a model file is a program (DESIGN.md), and so is a crafted spec's data path.
RUN groupadd --system glorot && useradd --system --gid glorot --home-dir /var/lib/glorot --create-home glorot
USER glorot

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
ENTRYPOINT ["glorot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

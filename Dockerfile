# The glorot image: API, worker and migrations run from it (docker-compose.yml builds it twice: the API
# and migrate services with the CPU build of torch, the worker with a CUDA build).
#   CPU:  docker build -t glorot .
#   CUDA: docker build -t glorot-worker --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
#                      --build-arg TORCH_REQUIRE_CUDA=1 .
# PyPI's Linux x86-64 torch wheels are CUDA builds (torch 2.13.0: CUDA 13.0); the PyTorch index
# https://download.pytorch.org/whl/cpu has the CPU builds and its /whl/cuXYZ folders the other CUDA
# versions. The CUDA runtime comes with the wheels: the host needs only the NVIDIA driver and the
# NVIDIA Container Toolkit (for the worker's GPU reservation).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# 1: fail the build unless the installed torch is a CUDA build (the worker image), so an index that
# serves CPU wheels cannot give a "GPU worker" that silently runs on the CPU.
ARG TORCH_REQUIRE_CUDA=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GLOROT_HOME=/var/lib/glorot

# torch first, from the chosen index, so the project's install does not pull another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && python -c "import sys, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
sys.exit('${TORCH_REQUIRE_CUDA}' == '1' and torch.version.cuda is None)"

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

# Never run as root: a crafted spec's data path, and later an uploaded model file, is untrusted input.
RUN groupadd --system glorot && useradd --system --gid glorot --home-dir /var/lib/glorot --create-home glorot
USER glorot

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
ENTRYPOINT ["glorot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

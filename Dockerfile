# The backfarm image: the CLI, the worker and Flower. Runs as an unprivileged user; numba kernels are compiled at
# build time so a new worker container starts hot.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backfarm ./backfarm
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    NUMBA_CACHE_DIR=/home/backfarm/.cache/numba \
    BACKFARM_DATA_DIR=/data
RUN groupadd --system --gid 10001 backfarm \
    && useradd --system --uid 10001 --gid backfarm --create-home backfarm \
    && mkdir /data && chown backfarm:backfarm /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER backfarm
RUN backfarm compile
VOLUME ["/data"]
CMD ["backfarm", "--help"]

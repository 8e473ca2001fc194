# XLMate realtime: one image for every process (`xlmate broker|discovery|edge ...`).
#   docker build -t registry.example.net/xlmate-realtime:0.1.0 .
# Multi-stage: the build stage installs the pinned dependencies into a venv; the runtime
# stage copies only that venv and runs as an unprivileged user (deploy/README.md).

# Exact tags of the same base in both stages (pin by digest in your registry if you can).
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/xlmate
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY xlmate xlmate
COPY broker broker
COPY edge edge
COPY discovery discovery
COPY benchmarks/xlmate_bench benchmarks/xlmate_bench
COPY clients/js/xlmate-client.js clients/js/xlmate-client.js
RUN /opt/xlmate/bin/pip install --no-cache-dir -c requirements/constraints.txt .

FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 xlmate \
    && useradd --system --no-log-init --uid 10001 --gid xlmate --home-dir /var/lib/xlmate \
       --create-home xlmate
COPY --from=build /opt/xlmate /opt/xlmate
ENV PATH=/opt/xlmate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XLMATE_LOG_FORMAT=json \
    XLMATE_HEALTH_URL=http://127.0.0.1:8101/healthz
USER 10001:10001
WORKDIR /var/lib/xlmate
# broker 5555-5557 (ZeroMQ) and 8099 (HTTP); discovery 8100 (HTTP) and 5570; edges 8101.
EXPOSE 5555 5556 5557 5570 8099 8100 8101
# Set XLMATE_HEALTH_URL to the process's /healthz (broker :8099, discovery :8100).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['XLMATE_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["xlmate"]
CMD ["--help"]

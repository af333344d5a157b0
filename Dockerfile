# syntax=docker/dockerfile:1
# Multi-stage: build the wheel and a virtualenv, fetch anvil from npm (devnet profile
# only needs it), then a slim runtime with neither compilers nor node.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config ./config
COPY watcher ./watcher
RUN python -m venv /opt/watcher \
    && /opt/watcher/bin/pip install --upgrade pip \
    && /opt/watcher/bin/pip wheel --no-deps -w /wheels . \
    && /opt/watcher/bin/pip install /wheels/*.whl

FROM node:20-bookworm-slim AS anvil
WORKDIR /contracts
COPY contracts/package.json contracts/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
    && cp node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil /anvil

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system watcher && useradd --system --gid watcher --home-dir /var/lib/watcher \
    --create-home --shell /usr/sbin/nologin watcher \
    && mkdir -p /devnet /etc/watcher && chown watcher:watcher /devnet
COPY --from=build /opt/watcher /opt/watcher
COPY --from=anvil /anvil /usr/local/bin/anvil
COPY deploy/docker/entrypoint.sh /usr/local/bin/watcher-entrypoint
ENV PATH=/opt/watcher/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WATCHER_HOME=/var/lib/watcher \
    WATCHER_API_HOST=0.0.0.0 \
    WATCHER_API_PORT=8080
USER watcher
WORKDIR /var/lib/watcher
EXPOSE 8080
# The daemon drains on SIGTERM (ticks in flight finish); give it time before SIGKILL
# with `docker stop -t` / compose's stop_grace_period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WATCHER_API_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["watcher-entrypoint"]
# `watcher run` applies the database migrations before it starts serving.
CMD ["run"]

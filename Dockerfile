FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY watcher ./watcher
RUN pip install --no-cache-dir .
COPY contracts/package.json contracts/package-lock.json ./contracts/
RUN cd contracts && npm ci --no-audit --no-fund --loglevel=error
COPY contracts ./contracts
COPY config ./config
ENV WATCHER_CONFIG_DIR=/app/config
EXPOSE 8080
ENTRYPOINT ["watcher"]
CMD ["run", "--host", "0.0.0.0"]

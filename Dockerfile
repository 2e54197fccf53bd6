FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    BANDIT_HOST=0.0.0.0 \
    BANDIT_PORT=8000 \
    BANDIT_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bandits ./bandits
COPY exporter ./exporter
COPY eventlog ./eventlog
COPY training ./training
COPY service ./service
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app banditd \
    && mkdir -p /data && chown banditd /data

USER banditd
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"BANDIT_PORT\"]}/healthz', timeout=2)"

# The main job: API and, unless REDIS_URL is set, an embedded redis-server with its data in /data.
CMD ["banditd", "up"]

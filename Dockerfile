# The evidence worker as a service: watches /data/inbox, keeps everything in /data.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin evidence \
 && mkdir -p /data/inbox && chown -R evidence:evidence /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY pipelines ./pipelines
COPY models ./models
RUN pip install --no-cache-dir .
# The default models, verified by SHA-256, baked into the image: processing never downloads anything.
ENV EVIDENCE_MODELS__DIR=/opt/evidence-models
RUN evidence models install && evidence models verify

ENV EVIDENCE_HOME=/data PYTHONUNBUFFERED=1
VOLUME ["/data"]
USER evidence
CMD ["evidence", "worker", "--inbox", "/data/inbox"]

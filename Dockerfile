# The evidence worker as a service: watches /data/inbox, keeps everything in /data.
#   docker build -t evidence-worker .            (or: --build-arg BASE=<a Debian bookworm image of your own>)
# BASE: any Debian bookworm image. The default is the official slim Python image; a plain Debian base
# (mmdebstrap --variant=minbase bookworm, imported where Docker Hub cannot be reached) gets Debian's
# Python 3.11 below.
ARG BASE=python:3.11-slim-bookworm

# -- build: the virtual environment and the models, made with pip, which the image does not keep ----------
FROM ${BASE} AS build
RUN { command -v python3 >/dev/null || { apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv && apt-get clean; }; }
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
# Pinned, hash-checked dependencies (requirements.lock; 'pip-compile --generate-hashes' remakes it), then this
# package without its own dependency resolution: the image holds what was reviewed, and no test tools.
RUN python3 -m venv /opt/evidence \
 && /opt/evidence/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY worker ./worker
COPY pipelines ./pipelines
COPY models ./models
RUN /opt/evidence/bin/pip install --no-cache-dir --no-deps .
# The default models, verified by SHA-256, baked into the image: processing never downloads anything.
# Installed by root, read-only for the service account (the cache folder is made world-readable: the
# weights are public; the account cannot change them, and 'evidence audit' re-hashes them).
ENV EVIDENCE_MODELS__DIR=/opt/evidence-models
RUN /opt/evidence/bin/evidence models install && /opt/evidence/bin/evidence models verify \
 && /opt/evidence/bin/python -m pip uninstall -y -q pip setuptools

# -- the image ----------------------------------------------------------------------------------------------
FROM ${BASE}
# No manuals, documentation or translations from Debian packages (their copyright files stay), and no
# downloaded packages left in apt's cache.
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
      > /etc/dpkg/dpkg.cfg.d/evidence-slim \
 && apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && { command -v python3 >/dev/null || apt-get install -y --no-install-recommends python3; } \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# The service account's home is the evidence home: owner-only (the worker refuses a looser one).
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin evidence \
 && install -d -m 0700 -o evidence -g evidence /data /data/inbox

COPY --from=build /opt/evidence /opt/evidence
COPY --from=build /opt/evidence-models /opt/evidence-models
ENV PATH=/opt/evidence/bin:$PATH EVIDENCE_MODELS__DIR=/opt/evidence-models
ENV EVIDENCE_HOME=/data PYTHONUNBUFFERED=1
VOLUME ["/data"]
USER evidence
# Healthy while the home, the store and the queue can be opened and read (read-only; works on a full disk).
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 CMD ["evidence", "-q", "status", "--json"]
CMD ["evidence", "worker", "--inbox", "/data/inbox"]

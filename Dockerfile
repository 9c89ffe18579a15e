# The OptMsg gateway image: `optmsg serve` by default; `optmsg worker` for job
# processes (see docker-compose.yml and docs/deployment.md).
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# openssl: DKIM key handling in the email bridge's tests and tools.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so that code changes do not reinstall them: the runtime
# dependencies of pyproject.toml only (no test or lint tools in the image), at the
# versions requirements.lock pins for `make run`.
COPY requirements.lock pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime-requirements.txt \
    && python -m pip install -c requirements.lock -r runtime-requirements.txt \
    && rm runtime-requirements.txt

COPY config ./config
COPY inbox ./inbox
COPY optin ./optin
COPY bridges ./bridges
COPY gateway ./gateway
RUN python -m pip install --no-deps .

RUN useradd --system --uid 10001 --home-dir /var/lib/optmsg --create-home optmsg \
    && mkdir -p /var/lib/optmsg/blobs \
    && chown -R optmsg:optmsg /var/lib/optmsg
USER optmsg
WORKDIR /var/lib/optmsg

# Inside a container the gateway listens on every interface; the compose file or
# the orchestrator decides what is published.
ENV OPTMSG_HTTP__LISTEN=0.0.0.0:8080 \
    OPTMSG_SMTP__LISTEN=0.0.0.0:2525 \
    OPTMSG_STORAGE__BLOB_DIR=/var/lib/optmsg/blobs

EXPOSE 8080 2525
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["optmsg"]
CMD ["serve"]

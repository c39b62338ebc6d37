# syntax=docker/dockerfile:1
# The C-STORE receiver: `dicom-ingest receive`. Build from the repository root:
#   docker build -f docker/receiver.Dockerfile -t receiver .
# The base is pinned to an exact release; pass --build-arg PYTHON_IMAGE=python:...@sha256:... to
# pin the digest as well (cloudbuild.yaml's _PYTHON_IMAGE).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# checkov:skip=CKV_DOCKER_7: FROM names the ARG above, whose default is an exact release tag (tests/infra check it); builds may pass a digest

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/dicom-ingest
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY dicom_ingest ./dicom_ingest
COPY receiver ./receiver
COPY uploader ./uploader
# Runtime dependencies only: the project without its [test] extra.
RUN /opt/dicom-ingest/bin/pip install . \
 && /opt/dicom-ingest/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/dicom-ingest/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/var/spool/dicom-ingest \
    DICOM_INGEST_SPOOL_DIR=/var/spool/dicom-ingest \
    DICOM_INGEST_HEALTH_PORT=8080 \
    DICOM_INGEST_LOG_FORMAT=json
RUN groupadd --system --gid 10001 dicom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dicom \
 && install -d -o 10001 -g 10001 -m 0750 /var/spool/dicom-ingest
COPY --from=build /opt/dicom-ingest /opt/dicom-ingest
USER 10001:10001
WORKDIR /var/spool/dicom-ingest
EXPOSE 2575 2762 8080
# Kubernetes uses its own probes (k8s/receiver-deployment.yaml.tftpl); this is for `docker run`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DICOM_INGEST_HEALTH_PORT', '8080') + '/healthz', timeout=3)"]
# Arguments are flags, as in the Deployment of Google's guide: --dimse_aet=IMPORTADAPTER ...
# The shell sets umask 077 (spooled patient data private, whatever creates a file) and is
# replaced by `dicom-ingest receive` ($0 and the arguments), which gets the signals as PID 1.
ENTRYPOINT ["/bin/sh", "-c", "umask 077 && exec \"$0\" \"$@\"", "dicom-ingest", "receive"]

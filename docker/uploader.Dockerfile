# syntax=docker/dockerfile:1
# The uploader: functions-framework serving dicom_ingest/function.py:upload (CloudEvent signature) for
# Pub/Sub push on Cloud Run; the same image runs the pull worker as `dicom-ingest work`.
# Build from the repository root:
#   docker build -f docker/uploader.Dockerfile -t uploader .
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
# Runtime dependencies only: the project without its [test] extra. The function's source is the
# installed dicom_ingest/function.py, linked to a fixed path (the site-packages path names the Python
# version), so the image holds one copy of it.
RUN /opt/dicom-ingest/bin/pip install . \
 && /opt/dicom-ingest/bin/pip uninstall --yes pip setuptools \
 && install -d /opt/dicom-ingest/function \
 && ln -s "$(/opt/dicom-ingest/bin/python -c 'import importlib.util; print(importlib.util.find_spec("dicom_ingest.function").origin)')" \
      /opt/dicom-ingest/function/main.py \
 && test -f /opt/dicom-ingest/function/main.py

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/dicom-ingest/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    DICOM_INGEST_AUTH=adc \
    DICOM_INGEST_LOG_FORMAT=json
RUN groupadd --system --gid 10001 dicom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dicom
COPY --from=build /opt/dicom-ingest /opt/dicom-ingest
USER 10001:10001
WORKDIR /opt/dicom-ingest/function
EXPOSE 8080
# Cloud Run does not run Docker health checks (it probes the port); this is for `docker run`.
# It checks the port only when the container runs the function: run as the pull worker
# (`dicom-ingest work ...`, which serves no port) it checks nothing and passes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, socket; cmdline = open('/proc/1/cmdline', 'rb').read(); b'functions-framework' in cmdline and socket.create_connection(('127.0.0.1', int(os.environ.get('PORT', '8080'))), timeout=3).close()"]
# umask 077 for every command the image runs (the function, or `dicom-ingest work` given as the
# command): the shell sets it and is replaced by the command ($0 and its arguments).
ENTRYPOINT ["/bin/sh", "-c", "umask 077 && exec \"$0\" \"$@\""]
# functions-framework listens on $PORT (Cloud Run sets it).
CMD ["functions-framework", "--source=/opt/dicom-ingest/function/main.py", "--target=upload", "--signature-type=cloudevent"]

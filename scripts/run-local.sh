#!/usr/bin/env bash
# Sets up, starts a local Orthanc (DICOMweb on 127.0.0.1:${ORTHANC_HTTP_PORT}) as the DICOM
# store, and runs the whole pipeline in one process: C-STORE on port ${DIMSE_PORT}, spool and
# queue in ${SPOOL_DIR}. Ctrl-C (or SIGTERM to this script) stops the pipeline first and waits
# for it to finish what is in flight (up to ${STOP_TIMEOUT} seconds), then stops Orthanc.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DIMSE_PORT="${DIMSE_PORT:-2575}"
ORTHANC_HTTP_PORT="${ORTHANC_HTTP_PORT:-18042}"
ORTHANC_DICOM_PORT="${ORTHANC_DICOM_PORT:-14242}"
STATE_DIR="${STATE_DIR:-$PWD/.local}"
STOP_TIMEOUT="${STOP_TIMEOUT:-60}"
SPOOL_DIR="${SPOOL_DIR:-$STATE_DIR/spool}"
mkdir -p "$STATE_DIR/orthanc"

cat >"$STATE_DIR/orthanc/orthanc.json" <<JSON
{
  "Name": "dicom-ingest-local-store",
  "StorageDirectory": "$STATE_DIR/orthanc/db",
  "IndexDirectory": "$STATE_DIR/orthanc/db",
  "HttpPort": $ORTHANC_HTTP_PORT,
  "DicomPort": $ORTHANC_DICOM_PORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
}
JSON

orthanc_pid=""
ingest_pid=""
stopping=""

# Sends a signal to a child and waits for it to exit; after a timeout, kills it.
stop_child() { # name pid signal timeout
  local name=$1 pid=$2 signal=$3 timeout=$4
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    echo "run-local: stopping $name (SIG$signal)" >&2
    kill -s "$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        echo "run-local: $name still running after ${timeout}s; killing it" >&2
        kill -s KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    echo "run-local: $name stopped" >&2
  fi
  wait "$pid" 2>/dev/null || true
}

# The pipeline first: the associations and uploads it finishes while stopping need the store.
stop_all() {
  [[ -z $stopping ]] || return 0
  stopping=1
  trap '' INT TERM # a second Ctrl-C does not cut the drain short
  stop_child pipeline "$ingest_pid" TERM "$STOP_TIMEOUT"
  stop_child Orthanc "$orthanc_pid" TERM 30
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

# setsid: neither child is in the terminal's process group, so a Ctrl-C reaches only this script,
# which stops them in order, instead of reaching all three at the same moment.
setsid /usr/sbin/Orthanc "$STATE_DIR/orthanc/orthanc.json" >"$STATE_DIR/orthanc/orthanc.log" 2>&1 &
orthanc_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ORTHANC_HTTP_PORT/system" >/dev/null 2>&1 && break
  kill -0 "$orthanc_pid" 2>/dev/null || { cat "$STATE_DIR/orthanc/orthanc.log" >&2; exit 1; }
  sleep 0.1
done

cat >&2 <<TEXT
DICOM store: Orthanc, DICOMweb at http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web
Send a study from another terminal:
  dcmsend 127.0.0.1 $DIMSE_PORT -aec IMPORTADAPTER +sd +r /path/to/dicom/files
Then find it:
  curl -s http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web/studies
  .venv/bin/dicom-ingest status --spool_dir $SPOOL_DIR
TEXT
setsid .venv/bin/dicom-ingest local \
  --dimse_aet IMPORTADAPTER \
  --dimse_port "$DIMSE_PORT" \
  --dicomweb_address "http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web" \
  --orthanc_rest_address "http://127.0.0.1:$ORTHANC_HTTP_PORT" \
  --spool_dir "$SPOOL_DIR" &
ingest_pid=$!
wait "$ingest_pid"

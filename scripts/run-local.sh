#!/usr/bin/env bash
# Sets up, starts a local Orthanc (DICOMweb on 127.0.0.1:${ORTHANC_HTTP_PORT}) as the DICOM
# store, and runs the whole pipeline in one process: C-STORE on port ${DIMSE_PORT}, spool and
# queue in ${SPOOL_DIR}. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DIMSE_PORT="${DIMSE_PORT:-2575}"
ORTHANC_HTTP_PORT="${ORTHANC_HTTP_PORT:-18042}"
ORTHANC_DICOM_PORT="${ORTHANC_DICOM_PORT:-14242}"
STATE_DIR="${STATE_DIR:-$PWD/.local}"
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
/usr/sbin/Orthanc "$STATE_DIR/orthanc/orthanc.json" >"$STATE_DIR/orthanc/orthanc.log" 2>&1 &
orthanc_pid=$!
trap 'kill "$orthanc_pid" 2>/dev/null || true' EXIT
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
.venv/bin/dicom-ingest local \
  --dimse_aet IMPORTADAPTER \
  --dimse_port "$DIMSE_PORT" \
  --dicomweb_address "http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web" \
  --spool_dir "$SPOOL_DIR" &
ingest_pid=$!
trap 'kill -TERM "$ingest_pid" 2>/dev/null || true; wait "$ingest_pid" || true; kill "$orthanc_pid" 2>/dev/null || true' EXIT INT TERM
wait "$ingest_pid"

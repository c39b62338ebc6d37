#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then lint, format check, strict type check, the offline checks of
# the deployment code (scripts/check-infra.sh) and the test suite. The in-process pipeline tests
# serve associations in the test's own process; the receiver's protocol and sender tests then run
# once more with two receive processes, as `dicom-ingest local` runs by default on several cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
bash scripts/check-infra.sh
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
  RECEIVE_PROCESSES=2 .venv/bin/python -m pytest -q \
    tests/integration/test_front_door.py tests/integration/test_receiver_protocol.py \
    tests/integration/test_senders.py tests/integration/test_pacs_peers.py \
    tests/integration/test_tls.py tests/integration/test_end_to_end.py
fi

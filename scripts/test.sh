#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then lint, format check, strict type check, the offline checks of
# the deployment code (scripts/check-infra.sh) and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
bash scripts/check-infra.sh
.venv/bin/python -m pytest "$@"

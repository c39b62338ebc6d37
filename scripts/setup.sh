#!/usr/bin/env bash
# Installs what dicom-ingest needs on a Debian machine: DCMTK, GDCM's tools, Orthanc with its
# DICOMweb plugin, and Chromium with its WebDriver (the status page's browser tests) as system
# packages, and a Python virtual environment in .venv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in dcmtk libgdcm-tools orthanc orthanc-dicomweb curl chromium chromium-driver; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  echo "installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
pip_log=.venv/pip-install.log
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e '.[test]'; } >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "pip install failed (log above, also in $pip_log)" >&2
  exit 1
fi

#!/usr/bin/env bash
# Offline checks of the deployment code: terraform/, k8s/, docker/.
#   1. terraform fmt -check -recursive terraform/
#   2. render k8s/*.yaml.tftpl with example values, DICOM TLS off and on, and check that
#      tests/infra/k8s_render.py renders every variant exactly as terraform's templatefile() does
#   3. kubernetes-validate --strict on the rendered manifests (bundled schemas, no network; the
#      PodMonitoring CRD is not among them: tests/infra/test_infra_k8s.py checks its fields)
#   4. checkov --skip-download: terraform (with the project's policies in terraform/policies/),
#      kubernetes (rendered manifests), dockerfile (docker/)
#   5. every project policy fails on tests/infra/fixtures/insecure (so each one checks something)
# terraform/ against the Google provider's schema (what `terraform validate` would check, but the
# provider cannot be downloaded here) is a pytest test that needs no tool from .venv-infra:
# tests/infra/test_infra_provider_schema.py, from tests/infra/fixtures/google-provider-schema.json
# (written by scripts/gen_provider_schema.py); scripts/test.sh runs it with the other tests.
# checkov and kubernetes-validate live in their own virtualenv, .venv-infra (checkov's hcl2 module
# clashes with python-hcl2, which the main test suite uses); it is created on first run.
# Exits non-zero if any check fails, after running all of them, and names the ones that failed.
set -uo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=1.34.0
VENV=${INFRA_VENV:-.venv-infra}
TERRAFORM=${TERRAFORM:-terraform}
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

failed=()
step() { printf '\n== %s\n' "$*"; }
fail() { failed+=("$1"); printf 'FAILED: %s\n' "$1" >&2; }

setup_venv() {
  local stamp="$VENV/.requirements" wanted="checkov==$CHECKOV_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  if [[ -x $VENV/bin/checkov && -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
    return 0
  fi
  step "installing $wanted into $VENV"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" || return 1
  # shellcheck disable=SC2086  # $wanted is two requirement words
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q $wanted >"$VENV/pip.log" 2>&1 || {
    cat "$VENV/pip.log" >&2
    return 1
  }
  echo "$wanted" >"$stamp"
}

start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "terraform fmt -check -recursive terraform/"
if ! command -v "$TERRAFORM" >/dev/null; then
  fail "terraform not found (set TERRAFORM=/path/to/terraform)"
elif ! "$TERRAFORM" fmt -check -recursive -diff terraform/; then
  fail "terraform fmt: run 'terraform fmt -recursive terraform/'"
fi

if ! setup_venv; then
  fail "could not install checkov and kubernetes-validate into $VENV"
  printf '\ninfra checks FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi

step "render k8s/*.yaml.tftpl"
if ! "$VENV/bin/python" tests/infra/k8s_render.py "$work/k8s"; then
  fail "k8s templates do not render"
fi
ls "$work/k8s"

step "k8s templates: tests/infra/k8s_render.py and terraform's templatefile() agree"
if ! command -v "$TERRAFORM" >/dev/null; then
  fail "terraform not found: cannot compare the renderer with templatefile()"
elif ! TERRAFORM=$TERRAFORM "$VENV/bin/python" tests/infra/k8s_render.py --compare-with-terraform; then
  fail "k8s_render.py and terraform's templatefile() differ"
fi

step "kubernetes-validate --strict (Kubernetes $KUBERNETES_VERSION)"
if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$work"/k8s/*.yaml; then
  fail "kubernetes-validate"
fi

checkov() {
  "$VENV/bin/checkov" --skip-download --compact --quiet "$@" 2>&1 | grep -v "^$"
  return "${PIPESTATUS[0]}"
}

step "checkov terraform (with terraform/policies)"
checkov -d terraform --framework terraform --external-checks-dir terraform/policies ||
  fail "checkov terraform"

step "checkov kubernetes (rendered manifests)"
checkov -d "$work/k8s" --framework kubernetes || fail "checkov kubernetes"

step "checkov dockerfile"
checkov -d docker --framework dockerfile || fail "checkov dockerfile"

step "every project policy fails on tests/infra/fixtures/insecure"
policy_ids=$(sed -n 's/^ *id: *"\{0,1\}\(CKV2_DICOMINGEST_[0-9]*\)"\{0,1\}.*/\1/p' terraform/policies/*.yaml | sort -u)
if [[ -z $policy_ids ]]; then
  fail "no policies found in terraform/policies"
else
  caught=$("$VENV/bin/checkov" -d tests/infra/fixtures/insecure --framework terraform --skip-download \
    --quiet --compact --external-checks-dir terraform/policies --check "$(echo "$policy_ids" | paste -sd,)" \
    2>/dev/null | sed -n 's/^Check: \(CKV2_DICOMINGEST_[0-9]*\):.*/\1/p' | sort -u)
  for id in $policy_ids; do
    if grep -qx "$id" <<<"$caught"; then
      echo "$id fails on the insecure fixture, as it should"
    else
      fail "policy $id does not fail on tests/infra/fixtures/insecure"
    fi
  done
fi

printf '\ninfra checks took %ss\n' $((SECONDS - start))
if ((${#failed[@]})); then
  printf 'infra checks FAILED:\n' >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "infra checks passed"

"""cloudbuild.yaml: the steps, their order, the images they use, and the substitutions.

Cloud Build rejects a build that uses an undeclared substitution (with MUST_MATCH) and treats
every single `$NAME` as one, so shell variables must be written `$$NAME`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "BRANCH_NAME",
    "TAG_NAME",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
# $$ is an escaped dollar; then ${NAME} or $NAME is a substitution.
SUBSTITUTION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return loaded


def _steps(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in build["steps"]}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def _used(build: dict[str, Any]) -> set[str]:
    used: set[str] = set()
    for text in _strings({k: v for k, v in build.items() if k != "substitutions"}):
        for match in SUBSTITUTION.finditer(text):
            name = match.group(1) or match.group(2)
            if name:
                used.add(name)
    return used


def test_every_step_is_named_once(build: dict[str, Any]) -> None:
    ids = [step.get("id") for step in build["steps"]]
    assert all(ids), "every step needs an id"
    assert len(ids) == len(set(ids))
    assert {
        "lint-typecheck",
        "infra-checks",
        "tests",
        "build-receiver",
        "build-uploader",
        "push-images",
        "deploy",
    } <= set(ids)


def test_wait_for_names_earlier_steps(build: dict[str, Any]) -> None:
    seen: set[str] = set()
    for step in build["steps"]:
        for dependency in step.get("waitFor", []):
            assert dependency == "-" or dependency in seen, f"{step['id']} waits for {dependency}"
        seen.add(step["id"])


def _ancestors(steps: dict[str, dict[str, Any]], name: str) -> set[str]:
    found: set[str] = set()
    todo = [d for d in steps[name].get("waitFor", []) if d != "-"]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo += [d for d in steps[current].get("waitFor", []) if d != "-"]
    return found


def test_images_are_pushed_only_after_every_check(build: dict[str, Any]) -> None:
    steps = _steps(build)
    before_push = _ancestors(steps, "push-images")
    assert {"lint-typecheck", "infra-checks", "tests", "build-receiver", "build-uploader"} <= (
        before_push
    )
    assert "push-images" in _ancestors(steps, "deploy")


def test_tests_run_against_the_official_emulator_and_fake_gcs(build: dict[str, Any]) -> None:
    subs = build["substitutions"]
    assert subs["_EMULATORS_IMAGE"] == "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
    assert subs["_FAKE_GCS_IMAGE"].startswith("fsouza/fake-gcs-server:")
    start = " ".join(_strings(_steps(build)["start-emulators"]))
    assert "${_EMULATORS_IMAGE}" in start and "gcloud beta emulators pubsub start" in start
    assert "${_FAKE_GCS_IMAGE}" in start and "--network cloudbuild" in start
    tests = _steps(build)["tests"]
    env = dict(item.split("=", 1) for item in tests["env"])
    assert env["PUBSUB_EMULATOR_HOST"] == "pubsub-emulator:8085"
    assert env["STORAGE_EMULATOR_HOST"] == "http://fake-gcs:4443"
    assert "wait-emulators" in tests["waitFor"]
    assert "tests/integration" in " ".join(tests["args"])


def test_both_images_are_built_from_their_dockerfiles(build: dict[str, Any]) -> None:
    for image in ("receiver", "uploader"):
        args = _steps(build)[f"build-{image}"]["args"]
        assert args[0] == "build"
        (dockerfile,) = [a.split("=", 1)[1] for a in args if a.startswith("--file=")]
        assert (ROOT / dockerfile).is_file()
        (tag,) = [a.split("=", 1)[1] for a in args if a.startswith("--tag=")]
        assert tag.startswith("${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_AR_REPOSITORY}/")
        assert args[-1] == "."


def test_deploy_applies_terraform_with_the_pushed_digests(build: dict[str, Any]) -> None:
    deploy = _steps(build)["deploy"]
    assert deploy["name"] == "${_TERRAFORM_IMAGE}"
    script = " ".join(deploy["args"])
    assert "terraform apply" in script
    assert "receiver_image=$$(cat /workspace/receiver.digest)" in script
    assert "uploader_image=$$(cat /workspace/uploader.digest)" in script
    push = " ".join(_steps(build)["push-images"]["args"])
    assert ".RepoDigests" in push and ".digest" in push
    assert (ROOT / build["substitutions"]["_TF_DIR"] / "main.tf").is_file()


def test_substitutions_used_are_declared_and_declared_are_used(build: dict[str, Any]) -> None:
    declared = set(build["substitutions"])
    assert all(name.startswith("_") for name in declared)
    used = _used(build)
    undeclared = {u for u in used if u not in declared and u not in BUILTINS}
    assert not undeclared, (
        f"undeclared substitutions (write shell variables as $$NAME): {undeclared}"
    )
    assert declared <= used, f"declared but unused: {declared - used}"
    assert build["options"]["substitution_option"] == "MUST_MATCH"


def test_every_dollar_is_escaped_or_a_substitution(build: dict[str, Any]) -> None:
    for text in _strings(build["steps"]):
        bare = SUBSTITUTION.sub("", text)
        assert "$" not in bare, f"unescaped $ (write $$ for the shell) in: {text[:80]}"


def test_terraform_image_matches_the_pinned_terraform(build: dict[str, Any]) -> None:
    image = build["substitutions"]["_TERRAFORM_IMAGE"]
    assert re.fullmatch(r"hashicorp/terraform:1\.\d+\.\d+", image)
    versions = (ROOT / "terraform" / "envs" / "example" / "versions.tf").read_text()
    assert 'required_version = ">= 1.5, < 2.0"' in versions


def test_python_image_matches_the_dockerfiles(build: dict[str, Any]) -> None:
    python_image = build["substitutions"]["_PYTHON_IMAGE"]
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        assert f"ARG PYTHON_IMAGE={python_image}\n" in dockerfile.read_text(), dockerfile.name

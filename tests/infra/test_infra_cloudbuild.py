"""cloudbuild.yaml: the steps, their order, the images they use, and the substitutions.

Cloud Build rejects a build that uses an undeclared substitution (with MUST_MATCH) and treats
every single `$NAME` as one, so shell variables must be written `$$NAME`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import hcl

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


def test_tests_run_with_the_suites_own_servers(build: dict[str, Any]) -> None:
    """Push subscriptions deliver to the uploader on 127.0.0.1: the Pub/Sub server must run in
    the tests step's own container, as the suite starts it when PUBSUB_EMULATOR_HOST is unset."""
    tests = _steps(build)["tests"]
    env = dict(item.split("=", 1) for item in tests.get("env", []))
    assert "PUBSUB_EMULATOR_HOST" not in env and "STORAGE_EMULATOR_HOST" not in env
    everything = " ".join(_strings(build))
    assert "PUBSUB_EMULATOR_HOST" not in everything, "an emulator elsewhere cannot push to tests"
    assert "docker run" not in everything, "no side containers the tests would depend on"
    script = " ".join(tests["args"])
    assert "tests/unit" in script and "tests/integration" in script and "tests/infra" in script


def _setup_sh_packages() -> list[str]:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    (line,) = re.findall(r"^for package in ([^;]+); do$", setup, flags=re.MULTILINE)
    return line.split()


def test_only_install_writes_the_virtualenv(build: dict[str, Any]) -> None:
    """lint-typecheck and tests run at the same time from one .venv: neither may install."""
    steps = _steps(build)
    for name, step in steps.items():
        script = " ".join(_strings(step))
        writes = "pip install" in script or "setup.sh" in script or "python -m venv" in script
        assert writes == (name == "install"), f"{name} writes the virtualenv"
        if ".venv/" in script and name != "install":
            assert "install" in _ancestors(steps, name), f"{name} uses .venv before it exists"
    tests = " ".join(steps["tests"]["args"])
    assert "apt-get install" in tests
    for package in _setup_sh_packages():
        assert re.search(rf"\b{re.escape(package)}\b", tests), f"tests step lacks {package}"


def _preflight(build: dict[str, Any], tmp_path: Path, **subs: str) -> int:
    """Run the preflight script as Cloud Build would: substitutions replaced, $$ unescaped."""
    values = {**build["substitutions"], **subs}
    step = _steps(build)["preflight"]
    script = step["args"][-1]
    script = SUBSTITUTION.sub(
        lambda m: "$" if m.group(0) == "$$" else values[m.group(1) or m.group(2)], script
    )
    done = subprocess.run(
        [step["entrypoint"], *step["args"][:-1], script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_deploy_is_off_by_default_and_fails_before_the_push(
    build: dict[str, Any], tmp_path: Path
) -> None:
    assert build["substitutions"]["_DEPLOY"] == "false"
    steps = _steps(build)
    assert steps["preflight"]["waitFor"] == ["-"]
    assert "preflight" in _ancestors(steps, "push-images")
    root = tmp_path / "envs" / "prod"
    root.mkdir(parents=True)
    (root / "main.tf").write_text("")
    tf_dir = "envs/prod"
    assert _preflight(build, tmp_path) == 0, "the defaults build, test and push"
    deploy = {"_DEPLOY": "true", "_TF_DIR": tf_dir, "_TF_STATE_BUCKET": "p-tfstate"}
    assert _preflight(build, tmp_path, **deploy) == 1, "no terraform.tfvars"
    (root / "terraform.tfvars").write_text('pacs_source_ranges = ["10.0.0.0/8"]\n')
    assert _preflight(build, tmp_path, **deploy) == 0
    assert _preflight(build, tmp_path, **{**deploy, "_TF_STATE_BUCKET": ""}) == 1
    assert _preflight(build, tmp_path, **{**deploy, "_TF_DIR": "envs/none"}) == 1
    assert _preflight(build, tmp_path, **{**deploy, "_DEPLOY": "yes"}) == 1


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


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _satisfies(version: str, constraint: str) -> bool:
    """Terraform's version constraint syntax: comma-separated comparisons (and ~>)."""
    have = _version(version)
    for clause in constraint.split(","):
        match = re.fullmatch(r"\s*(>=|<=|!=|~>|>|<|=)?\s*(\d+(?:\.\d+)*)\s*", clause)
        assert match, f"cannot read version constraint {clause!r}"
        operator, bound = match.group(1) or "=", _version(match.group(2))
        padded = have[: len(bound)] + (0,) * (len(bound) - len(have))
        if operator == "~>":
            upper = (*bound[: max(len(bound) - 2, 0)], bound[max(len(bound) - 2, 0)] + 1)
            ok = padded >= bound and have[: len(upper)] < upper
        else:
            ok = {
                "=": padded == bound,
                "!=": padded != bound,
                ">": padded > bound,
                ">=": padded >= bound,
                "<": padded < bound,
                "<=": padded <= bound,
            }[operator]
        if not ok:
            return False
    return True


def test_version_constraints_are_read_right() -> None:
    assert _satisfies("1.11.4", ">= 1.5, < 2.0")
    assert not _satisfies("1.4.7", ">= 1.5, < 2.0")
    assert not _satisfies("2.0.0", ">= 1.5, < 2.0")
    assert _satisfies("6.20.0", "~> 6.14") and not _satisfies("7.0.0", "~> 6.14")
    assert _satisfies("1.5.7", "~> 1.5.0") and not _satisfies("1.6.0", "~> 1.5.0")


def test_terraform_image_satisfies_every_required_version(build: dict[str, Any]) -> None:
    image = build["substitutions"]["_TERRAFORM_IMAGE"]
    match = re.fullmatch(r"hashicorp/terraform:(\d+\.\d+\.\d+)", image)
    assert match, f"{image}: pin an exact terraform release"
    for config in hcl.configurations():
        (terraform,) = hcl.blocks(config, "terraform")
        constraint = terraform["required_version"]
        assert _satisfies(match.group(1), constraint), f"{image} does not satisfy {config}"


def test_python_image_matches_the_dockerfiles(build: dict[str, Any]) -> None:
    python_image = build["substitutions"]["_PYTHON_IMAGE"]
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        assert f"ARG PYTHON_IMAGE={python_image}\n" in dockerfile.read_text(), dockerfile.name

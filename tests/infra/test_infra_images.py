"""docker/ and .dockerignore: what can be checked without a Docker engine.

The commands the images run are run here, from the project's own virtualenv: the receiver's
entry point and the pull worker answer --help with every flag the manifests pass, every
DICOM_INGEST_* variable the deployment sets names a real flag, and the uploader's
functions-framework command starts and serves HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.net import on_free_port, port_open, refusing_port, wait_until

from infra import hcl, k8s_render

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    result = []
    for entry in logical:
        instruction, _, arguments = entry.partition(" ")
        result.append((instruction.upper(), arguments.strip()))
    return result


def _exec_form(dockerfile: Path, instruction: str) -> list[str]:
    (value,) = [args for name, args in _instructions(dockerfile) if name == instruction]
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"{instruction} must use the exec (JSON) form"
    return [str(p) for p in parsed]


def _env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    stages = [i for i, (name, _) in enumerate(_instructions(dockerfile)) if name == "FROM"]
    for name, args in _instructions(dockerfile)[stages[-1] :]:
        if name == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _help(*command: str) -> str:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _env_flags(names: list[str]) -> set[str]:
    return {n.removeprefix("DICOM_INGEST_").lower() for n in names if n.startswith("DICOM_INGEST_")}


def test_both_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["receiver.Dockerfile", "uploader.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_pinned_slim_base_non_root_health_check(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    (base_arg,) = [a for n, a in instructions if n == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(
        r"PYTHON_IMAGE=python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base_arg
    )
    froms = [a for n, a in instructions if n == "FROM"]
    assert froms and all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    users = [a for n, a in instructions if n == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(n == "HEALTHCHECK" for n, _ in instructions)
    runs = " ".join(a for n, a in instructions if n == "RUN")
    assert "pip install ." in runs
    assert "[test]" not in runs, "runtime dependencies only"
    copied = [a.split()[0] for n, a in instructions if n == "COPY" and "--from" not in a]
    assert set(copied) <= {
        "pyproject.toml",
        "README.md",
        "ingest",
        "dicom_ingest",
        "receiver",
        "uploader",
    }


# The images' entry point: a shell that sets umask 077 and is replaced by the command ($0 and
# its arguments), so the files a container writes are private and the command is PID 1.
UMASK_WRAPPER = ["/bin/sh", "-c", 'umask 077 && exec "$0" "$@"']


def _wrapped_command(dockerfile: Path) -> list[str]:
    """The command after the image's umask wrapper (ENTRYPOINT, then CMD if any)."""
    entrypoint = _exec_form(dockerfile, "ENTRYPOINT")
    assert entrypoint[:3] == UMASK_WRAPPER, entrypoint
    cmd = [a for n, a in _instructions(dockerfile) if n == "CMD"]
    return entrypoint[3:] + (_exec_form(dockerfile, "CMD") if cmd else [])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_their_command_with_umask_077(dockerfile: Path) -> None:
    assert _wrapped_command(dockerfile), "a command follows the wrapper"
    entrypoint = _exec_form(dockerfile, "ENTRYPOINT")
    probe = "umask; printf '<%s>' \"$@\""
    previous = os.umask(0o022)
    try:
        done = subprocess.run(
            [*entrypoint[:3], "/bin/sh", "-c", probe, "sh", "one arg", "two"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        os.umask(previous)
    assert done.stdout.split() == ["0077", "<one", "arg><two>"], done.stdout


def test_receiver_entry_point_takes_the_manifests_flags() -> None:
    entrypoint = _wrapped_command(DOCKER / "receiver.Dockerfile")
    assert entrypoint == ["dicom-ingest", "receive"]
    text = _help(*entrypoint)
    template = k8s_render.K8S_DIR / "receiver-deployment.yaml.tftpl"
    flags: set[str] = set()
    for values in k8s_render.variants(template).values():  # DICOM TLS off and on
        deployment = yaml.safe_load(k8s_render.render(template, values))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        flags |= {arg[2:].split("=", 1)[0] for arg in container["args"]}
        flags |= _env_flags([e["name"] for e in container["env"]])
    flags |= _env_flags(list(_env(DOCKER / "receiver.Dockerfile")))
    assert {"dimse_aet", "dimse_port", "bucket", "topic", "spool_dir", "health_port"} <= flags
    assert {"tls_cert", "tls_key", "tls_ca", "tls_port", "tls_only"} <= flags
    missing = {f for f in flags if f"--{f}" not in text}
    assert not missing, f"`dicom-ingest receive` has no flag for {sorted(missing)}"


def test_pull_worker_takes_the_manifests_flags_and_the_uploader_env() -> None:
    text = _help("dicom-ingest", "work")
    worker = yaml.safe_load(k8s_render.render(k8s_render.K8S_DIR / "worker-deployment.yaml.tftpl"))
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    flags = {arg[2:].split("=", 1)[0] for arg in container["args"]}
    flags |= _env_flags([e["name"] for e in container["env"]])
    # The Cloud Run service sets the same variables for the push handler.
    cloud_run = (hcl.TERRAFORM / "modules" / "uploader" / "main.tf").read_text()
    flags |= _env_flags(re.findall(r"\bDICOM_INGEST_\w+", cloud_run))
    flags |= _env_flags(list(_env(DOCKER / "uploader.Dockerfile")))
    assert {"subscription", "dicomweb_address", "dead_letter_topic", "auth"} <= flags
    missing = {f for f in flags if f"--{f}" not in text}
    assert not missing, f"`dicom-ingest work` has no flag for {sorted(missing)}"


FUNCTION_SOURCE = "/opt/dicom-ingest/function/main.py"


def _run_lines(dockerfile: Path) -> list[str]:
    return [a for n, a in _instructions(dockerfile) if n == "RUN"]


def test_uploader_image_ships_the_function_source_once() -> None:
    """The CMD's --source is a link to the installed dicom_ingest/function.py, not a copy."""
    dockerfile = DOCKER / "uploader.Dockerfile"
    command = _exec_form(dockerfile, "CMD")
    assert f"--source={FUNCTION_SOURCE}" in command
    copies = [a for n, a in _instructions(dockerfile) if n == "COPY"]
    assert not any("function.py" in a or "main.py" in a for a in copies), copies
    (run,) = [r for r in _run_lines(dockerfile) if FUNCTION_SOURCE in r]
    assert re.search(rf"ln -s .* {re.escape(FUNCTION_SOURCE)}", run), run
    assert f"test -f {FUNCTION_SOURCE}" in run, "the build fails if the link dangles"
    # The command that finds the installed file, run against this virtualenv's install.
    (finder,) = re.findall(r"python -c '([^']+)'", run)
    done = subprocess.run(
        [sys.executable, "-c", finder], capture_output=True, text=True, timeout=60, check=True
    )
    found = Path(done.stdout.strip())
    assert found.name == "function.py" and found.parent.name == "dicom_ingest" and found.is_file()


def _healthcheck_code(dockerfile: Path) -> str:
    (value,) = [a for n, a in _instructions(dockerfile) if n == "HEALTHCHECK"]
    command = json.loads(value[value.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"]
    return str(command[2])


def _healthcheck(code: str, pid1_cmdline: bytes, port: int, tmp_path: Path) -> int:
    """Run the image's HEALTHCHECK code with a stand-in for /proc/1/cmdline."""
    assert "/proc/1/cmdline" in code
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(pid1_cmdline)
    done = subprocess.run(
        [sys.executable, "-c", code.replace("/proc/1/cmdline", str(cmdline))],
        env={**os.environ, "PORT": str(port)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_uploader_health_check_fits_the_function_and_the_pull_worker(tmp_path: Path) -> None:
    code = _healthcheck_code(DOCKER / "uploader.Dockerfile")
    closed = refusing_port()
    function = b"/opt/dicom-ingest/bin/python\0/opt/dicom-ingest/bin/functions-framework\0"
    worker = b"/opt/dicom-ingest/bin/python\0/opt/dicom-ingest/bin/dicom-ingest\0work\0"
    assert _healthcheck(code, function, closed, tmp_path) != 0, "a function not serving fails"
    assert _healthcheck(code, worker, closed, tmp_path) == 0, "the pull worker serves no port"


@pytest.fixture
def uploader_server(tmp_path: Path) -> Iterator[int]:
    """The uploader image's CMD, run from this virtualenv with the repository's function."""
    command = _wrapped_command(DOCKER / "uploader.Dockerfile")
    assert command[0] == "functions-framework"
    assert f"--source={FUNCTION_SOURCE}" in command
    assert "--target=upload" in command and "--signature-type=cloudevent" in command
    source = ROOT / "dicom_ingest" / "function.py"
    assert source.is_file()
    argv = [str(BIN / command[0])] + [
        f"--source={source}" if arg.startswith("--source=") else arg for arg in command[1:]
    ]
    log = (tmp_path / "uploader.log").open("w")

    def start(port: int) -> tuple[subprocess.Popen[str], int]:
        env = {
            **os.environ,
            **_env(DOCKER / "uploader.Dockerfile"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "WORKERS": "1",
            "THREADS": "2",
            "DICOM_INGEST_DICOMWEB_ADDRESS": "http://127.0.0.1:9/dicomWeb",
            # The app builds its Pub/Sub and Cloud Storage clients when it starts. This test's
            # message never reaches either; emulator addresses keep them from looking for
            # credentials (Application Default Credentials, which Cloud Run provides).
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{refusing_port()}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{refusing_port()}",
            "DICOM_INGEST_AUTH": "none",
            "DICOM_INGEST_LOG_FORMAT": "json",
        }
        for routed in ("DICOM_INGEST_DEAD_LETTER_TOPIC", "DICOM_INGEST_OVERSIZE_TOPIC"):
            env.pop(routed, None)  # the test's 503 is the answer without a dead-letter topic
        process = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        wait_until(lambda: port_open(port) or process.poll() is not None, 60, "functions-framework")
        if process.poll() is not None:
            raise RuntimeError((tmp_path / "uploader.log").read_text())
        return process, port

    process, port = on_free_port(start, errors=(RuntimeError,))
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _post(port: int, body: dict[str, object]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_uploader_command_runs_the_function_on_a_push_request(
    uploader_server: int, tmp_path: Path
) -> None:
    """A Pub/Sub push envelope reaches upload(): its data is not an instance message, and with
    no dead-letter topic the function refuses it (503) so that Pub/Sub's policy takes it."""
    envelope = {
        "message": {
            "data": base64.b64encode(b"not an instance message").decode(),
            "messageId": "1",
            "publishTime": "2026-11-24T10:00:00Z",
            "attributes": {},
        },
        "subscription": "projects/example-project/subscriptions/dicom-ingest-push",
        "deliveryAttempt": 1,
    }
    status, body = _post(uploader_server, envelope)
    assert status == 503, body
    assert "undecodable" in body, "the answer comes from the function, not the framework"


# --- .dockerignore -------------------------------------------------------------------------


def _pattern(rule: str) -> re.Pattern[str]:
    rule = rule.strip("/")
    out = ""
    i = 0
    while i < len(rule):
        if rule.startswith("**", i):
            out += ".*"
            i += 2
            if rule.startswith("/", i):
                out += "/?"
                i += 1
            continue
        char = rule[i]
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(out)


def _ignored(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = _pattern(rule.removeprefix("!"))
        if any(pattern.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        "tests/unit/test_queue.py",
        "tests/infra/k8s_render.py",
        ".venv/bin/python",
        ".venv-infra/bin/checkov",
        ".git/HEAD",
        ".local/spool/queue.sqlite",
        "spool/1.2.3.dcm",
        "terraform/envs/example/terraform.tfstate",
        "terraform/envs/example/.terraform/providers/x",
        "receiver/__pycache__/scp.cpython-311.pyc",
        "k8s/receiver-deployment.yaml.tftpl",
        "cloudbuild.yaml",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _ignored(path, _dockerignore())


def test_dockerignore_keeps_the_package_sources() -> None:
    rules = _dockerignore()
    needed = ["pyproject.toml", "README.md", "dicom_ingest/function.py"]
    for package in ("ingest", "dicom_ingest", "receiver", "uploader"):
        needed += [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")]
    for path in needed:
        assert not _ignored(path, rules), path

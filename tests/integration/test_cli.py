"""The ``dicom-ingest`` command as an operator meets it: help, mistakes, ports, pipes, terminals.

Every case runs the real command in its own process and checks its exact output and exit status.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.datasets import ct_dataset
from support.messages import make_message
from support.net import wait_until
from support.process import IngestProcess
from support.spool import put_instance
from support.terminal import Terminal
from support.tls import Authority

from dicom_ingest.cli import CLEAR_SCREEN, USAGE
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import QUEUE_FILE, SqliteQueue
from ingest.contracts.message import encode

COMMAND = [sys.executable, "-m", "dicom_ingest.cli"]
# No DICOM_INGEST_* settings from the environment the tests run in; help at a known width.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_INGEST_")} | {
    "COLUMNS": "200"
}
REFUSING_STORE = "http://127.0.0.1:9/dicom-web"

# The default --receive_processes: one per core; none (the listener serves) on one core.
_CORES = len(os.sched_getaffinity(0))
RECEIVE_PROCESSES = 0 if _CORES == 1 else _CORES


def run(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env or ENV,
        **kwargs,  # type: ignore[call-overload]
    )


def usage(command: str) -> str:
    key = command.replace("replay ", "") if command in ("replay drain", "replay seek") else command
    return f"usage: dicom-ingest {command} {USAGE[key]}\n"


# ---- help ----


def help_lines(*command: str) -> list[str]:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_help_lists_allowed_values_and_marks_required_flags() -> None:
    lines = help_lines("local")
    assert lines[0] == "usage: dicom-ingest local --spool_dir DIR --dicomweb_address URL [flags]"
    described: dict[str, str] = {}  # each flag's spellings: its help, wrapped lines joined
    for line in lines:
        if line.startswith("  -"):
            flag = line.strip()
            described[flag] = ""
        elif line.startswith("     ") and described:
            described[flag] = f"{described[flag]} {line.strip()}".strip()
    assert described["--auth {none,bearer,adc}"] == (
        "DICOMweb authentication (one of none, bearer, adc; default: none; env DICOM_INGEST_AUTH)"
    )
    assert described["--conflict {fail,overwrite,skip}"].endswith(
        "(one of fail, overwrite, skip; default: fail; env DICOM_INGEST_CONFLICT)"
    )
    assert described["--log_format {text,json}, --log-format {text,json}"] == (
        "log output (one of text, json; default: text; env DICOM_INGEST_LOG_FORMAT)"
    )
    assert described["--spool_dir SPOOL_DIR, --spool-dir SPOOL_DIR"] == (
        "spool directory: objects, queue database, staging (required; env DICOM_INGEST_SPOOL_DIR)"
    )
    text = "\n".join(lines)
    assert "log output (one of text, json; default: text; env DICOM_INGEST_LOG_FORMAT)" in text
    assert "spool directory: objects, queue database, staging (required;" in text
    assert "DICOMweb base URL (STOW-RS goes to <address>/studies) (required;" in text
    assert "TCP port for DIMSE associations (default: 2575; env DICOM_INGEST_DIMSE_PORT)" in text


@pytest.mark.parametrize(
    ("command", "choices", "required"),
    [
        (("receive",), ["--ack_after {store,spool}"], ["--spool_dir", "--bucket", "--topic"]),
        (("work",), ["--auth {none,bearer,adc}"], ["--subscription", "--dicomweb_address"]),
        (("status",), [], ["--spool_dir"]),
        (("replay", "drain"), ["--conflict {fail,overwrite,skip}"], ["--subscription"]),
        (("replay", "reconcile"), ["--auth {none,bearer,adc}"], ["--bucket", "--dicomweb_address"]),
    ],
)
def test_every_subcommand_shows_its_choices_and_required_flags(
    command: tuple[str, ...], choices: list[str], required: list[str]
) -> None:
    lines = help_lines(*command)
    assert lines[0] == usage(" ".join(command)).rstrip("\n")
    for choice in choices:
        assert any(line.lstrip().startswith(choice) for line in lines), choice
    marked = [
        line.split()[0]
        for i, line in enumerate(lines)
        if line.startswith("  --") and "(required" in " ".join(lines[i : i + 2])
    ]
    assert marked == required
    for flag in required:
        assert flag in lines[0]  # the usage line names it too


# ---- mistakes: the subcommand's usage, one clear line, exit 2 ----

MISTAKES = [
    (["local", "--dimse_prot", "11112"], "unknown flag --dimse_prot (did you mean --dimse_port?)"),
    (["local", "--dimse-prot=11112"], "unknown flag --dimse-prot (did you mean --dimse-port?)"),
    (
        ["replay", "drain", "--dry_run", "--limt", "3"],
        "unknown flag --limt (did you mean --limit?)",
    ),
    (["status", "--spool_dir", "x", "extra"], "unexpected argument 'extra'"),
    (["local", "--dimse_port", "abc"], "--dimse_port: 'abc' is not a port number (0-65535)"),
    (["local", "--dimse_port", "70000"], "--dimse_port: '70000' is not a port number (0-65535)"),
    (["local", "--tls_port", "-1"], "--tls_port: '-1' is not a port number (0-65535)"),
    (["local", "--upload_workers", "four"], "--upload_workers: 'four' is not a whole number"),
    (
        ["local", "--acse_timeout", "soon"],
        "--acse_timeout: 'soon' is not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h)",
    ),
    (
        ["local", "--batch_max_bytes", "64 megs"],
        "--batch_max_bytes: '64 megs' is not a byte size (e.g. 1048576, 64MiB, 1GiB)",
    ),
    (
        ["local", "--dimse_aet", "AN-AE-TITLE-TOO-LONG"],
        "--dimse_aet: 'AN-AE-TITLE-TOO-LONG' is not an AE title"
        " (1-16 printable characters, no backslash)",
    ),
    (
        ["local", "--tls_cert", "/nonexistent/cert.pem"],
        "--tls_cert: '/nonexistent/cert.pem' is not a file",
    ),
    (["local", "--keep_uploaded", "maybe"], "--keep_uploaded: 'maybe' is not true or false"),
    (["local", "--auth", "basic"], "--auth: 'basic' is not one of none, bearer, adc"),
    (["local", "--log_format", "xml"], "--log_format: 'xml' is not one of text, json"),
    (["local"], "--spool_dir and --dicomweb_address are required"),
    (["status", "--spool_dir", "x", "--limit", "all"], "--limit: 'all' is not a whole number"),
    (
        ["status", "--spool_dir", "x", "--watch", "often"],
        "--watch: 'often' is not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h)",
    ),
    (
        [
            "replay",
            "drain",
            "--subscription",
            "projects/my-project/subscriptions/dead",
            "--dry_run",
            "--rate",
            "fast",
        ],
        "--rate: 'fast' is not a number",
    ),
    (
        [
            "replay",
            "seek",
            "--subscription",
            "projects/my-project/subscriptions/dead",
            "--time",
            "yesterday",
        ],
        "--time: 'yesterday' is not a time (e.g. 2026-11-24T10:00:00Z)",
    ),
]


@pytest.mark.parametrize(("args", "error"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistake_shows_the_subcommands_usage_and_says_what_is_wrong(
    args: list[str], error: str
) -> None:
    command = " ".join(args[:2] if args[0] == "replay" else args[:1])
    result = run(*args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{usage(command)}dicom-ingest {command}: error: {error}\n"


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    result = run(
        "local",
        "--spool_dir",
        str(tmp_path),
        "--dicomweb_address",
        REFUSING_STORE,
        env=ENV | {"DICOM_INGEST_DIMSE_PORT": "abc"},
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"{usage('local')}dicom-ingest local: error:"
        " DICOM_INGEST_DIMSE_PORT: 'abc' is not a port number (0-65535)\n"
    )
    assert not (tmp_path / QUEUE_FILE).exists()  # nothing was started


# ---- a port in use is named, exit 3 ----


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield int(holder.getsockname()[1])


def assert_named_in_use(
    command: str, flag: str, port: int, *args: str, env: dict[str, str] = ENV
) -> None:
    result = run(command, *args, "--dimse_bind", "127.0.0.1", f"--{flag}", str(port), env=env)
    assert (result.returncode, result.stdout) == (3, "")
    assert (
        result.stderr == f"dicom-ingest {command}: error: --{flag} {port}: address already in use\n"
    )


def local_args(tmp_path: Path) -> list[str]:
    return ["--spool_dir", str(tmp_path / "spool"), "--dicomweb_address", REFUSING_STORE]


def test_a_dimse_port_in_use_is_named(tmp_path: Path, taken_port: int) -> None:
    assert_named_in_use("local", "dimse_port", taken_port, *local_args(tmp_path))


def test_a_tls_port_in_use_is_named(tmp_path: Path, taken_port: int) -> None:
    server = Authority(tmp_path).issue("server", "localhost", server=True)
    tls = ["--tls_cert", str(server.cert), "--tls_key", str(server.key), "--dimse_port", "0"]
    assert_named_in_use("local", "tls_port", taken_port, *local_args(tmp_path), *tls)


def test_a_health_port_in_use_is_named(tmp_path: Path, taken_port: int) -> None:
    # The clients are made but never used: the emulator addresses only keep credentials away.
    env = ENV | {
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    }
    cloud = ["--bucket", "a-bucket", "--topic", "projects/my-project/topics/instances"]
    spool = ["--spool_dir", str(tmp_path / "spool"), "--dimse_port", "0"]
    assert_named_in_use("receive", "health_port", taken_port, *spool, *cloud, env=env)


# ---- output closed early: quiet, exit 141 ----


def make_queue(spool: Path, pending: int = 0, dead: int = 0) -> None:
    spool.mkdir(parents=True, exist_ok=True)
    queue = SqliteQueue(spool / QUEUE_FILE, durable_commits=False)
    for n in range(pending + dead):
        queue.publish(encode(make_message(sop_instance_uid=f"1.2.3.{n + 1}")), {})
    for delivery in queue.pull(dead, lease_seconds=60):
        queue.dead_letter(delivery, "HTTP 400: Invalid multipart body")
    queue.close()


def test_status_into_a_pipe_closed_by_head_ends_quietly(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_queue(spool, dead=3000)  # far more than a pipe holds, so the writer meets the close
    status = subprocess.Popen(
        [*COMMAND, "status", "--spool_dir", str(spool), "--limit", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert status.stdout is not None and status.stderr is not None
    head = subprocess.run(
        ["head", "-3"], stdin=status.stdout, capture_output=True, timeout=60, check=True
    )
    status.stdout.close()
    assert status.wait(60) == 141
    assert status.stderr.read() == b""
    status.stderr.close()
    assert head.stdout == b"pending     0\nin flight   0\nretrying    0\n"


def test_status_into_a_pipe_already_closed_ends_quietly(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_queue(spool, pending=2)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [*COMMAND, "status", "--spool_dir", str(spool)],
            stdout=writer,
            stderr=subprocess.PIPE,
            env=ENV,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, b"")


# ---- the ready line ----


def test_the_ready_line_gives_its_fields_then_the_command_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    process = IngestProcess(tmp_path / "spool", REFUSING_STORE, "--log_format", "text")
    try:
        wait_until(lambda: "try: dcmsend" in process.output(), 60, "the ready lines")
        lines = process.output().splitlines()
        [ready] = [i for i, line in enumerate(lines) if "ready: accepting" in line]
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    dicom_ingest\.local: "
        first = re.fullmatch(
            stamp + r"ready: accepting associations; DICOM store unreachable:"
            r" http://127\.0\.0\.1:9/dicom-web: ConnectionError \(Connection refused\)"
            r" ae_title=IMPORTADAPTER port=(\d+) store_reachable=False pending=0 dead_letters=0"
            rf" receive_processes={RECEIVE_PROCESSES}",
            lines[ready],
        )
        assert first is not None, lines[ready]
        port = first.group(1)
        assert re.fullmatch(
            stamp + rf"try: dcmsend 127\.0\.0\.1 {port} -aec IMPORTADAPTER <files>",
            lines[ready + 1],
        ), lines[ready + 1]
        assert process.terminate() == 0
    finally:
        process.stop()


# ---- status --watch ----

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def figures(newline: str) -> str:
    return newline.join(
        [
            "pending     2",
            "in flight   0",
            "retrying    0",
            "dead        1",
            r"oldest      \d+s",
            "",
        ]
    )


def test_status_watch_redraws_a_terminal_and_ctrl_c_ends_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_queue(spool, pending=2, dead=1)
    terminal = Terminal([*COMMAND, "status", "--spool_dir", str(spool), "--watch", "0.2"], ENV)
    try:
        terminal.read_until(lambda text: text.count(CLEAR_SCREEN) >= 3)
        terminal.interrupt()
        assert terminal.wait() == 0
    finally:
        terminal.close()
    frames = terminal.text().split(CLEAR_SCREEN)
    assert frames[0] == ""  # the screen is cleared before the first frame
    header = (
        re.escape(f"dicom-ingest status --spool_dir {spool}    ")
        + STAMP
        + re.escape("    (Ctrl-C to stop)\r\n\r\n")
    )
    dead = (
        r"\r\ndead letters \(requeue with: dicom-ingest requeue --spool_dir DIR --all\):\r\n"
        r"  1  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  attempts=1  sop=1\.2\.3\.1\r\n"
        r"      HTTP 400: Invalid multipart body\r\n"
    )
    for frame in frames[1:3]:
        assert re.fullmatch(header + figures("\r\n") + dead, frame), frame
    assert "Traceback" not in terminal.text() and "KeyboardInterrupt" not in terminal.text()


def test_status_watch_into_a_file_prints_snapshots_without_screen_codes(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_queue(spool, pending=2, dead=1)
    output = tmp_path / "status.log"
    with open(output, "wb") as sink:
        watch = subprocess.Popen(
            [*COMMAND, "status", "--spool_dir", str(spool), "--watch", "0.2"],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        try:
            wait_until(lambda: output.read_text().count("--- ") >= 3, 60, "three snapshots")
            watch.send_signal(signal.SIGINT)
            assert watch.wait(60) == 0
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait(10)
    assert watch.stderr is not None and watch.stderr.read() == b""
    watch.stderr.close()
    text = output.read_text()
    assert "\x1b" not in text
    snapshot = (
        r"--- "
        + STAMP
        + r"\n"
        + figures("\n")
        + r"\ndead letters \(requeue with: dicom-ingest requeue --spool_dir DIR --all\):\n"
        r"  1  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  attempts=1  sop=1\.2\.3\.1\n"
        r"      HTTP 400: Invalid multipart body\n\n"
    )
    # Two whole snapshots before the third began (Ctrl-C may cut the last one short).
    first, second = text.split("--- ")[1:3]
    for whole in (first, second):
        assert re.fullmatch(snapshot, "--- " + whole), text


def test_status_watch_json_is_a_line_per_snapshot(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_queue(spool, pending=2)
    watch = subprocess.Popen(
        [*COMMAND, "status", "--spool_dir", str(spool), "--json", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        text=True,
    )
    assert watch.stdout is not None
    try:
        snapshots = [json.loads(watch.stdout.readline()) for _ in range(2)]
        watch.send_signal(signal.SIGINT)
        assert watch.wait(60) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.communicate(timeout=10)
    assert [s["pending"] for s in snapshots] == [2, 2]
    assert all(s["dead_letters"] == [] for s in snapshots)


# ---- progress on a terminal, a summary elsewhere ----


def spool_without_messages(spool: Path, objects: int) -> None:
    """Objects in the spool whose messages were lost, old enough for `reconcile` to take."""
    store = SpoolObjectStore(spool)
    for seed in range(objects):
        put_instance(store, ct_dataset(seed=seed))
    SqliteQueue(spool / QUEUE_FILE).close()
    an_hour_ago = time.time() - 3600
    for path in spool.rglob("*.dcm"):
        os.utime(path, (an_hour_ago, an_hour_ago), follow_symlinks=False)
        os.utime(path, (an_hour_ago, an_hour_ago))


SUMMARY = "3 object(s) in the spool; 3 had no message and were enqueued; 0 could not be read"


def test_reconcile_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool_without_messages(spool, 3)
    terminal = Terminal([*COMMAND, "reconcile", "--spool_dir", str(spool)], ENV)
    try:
        assert terminal.wait(60) == 0
    finally:
        terminal.close()
    text = terminal.text()
    bar = re.search(
        r"reconcile: 100%\|[^|]+\| 3/3 \[[\d:]+<[\d:]+, +[\d.]+ objects/s,"
        r" enqueued=3, unusable=0\]",
        text,
    )
    assert bar is not None, text
    assert text.endswith(SUMMARY + "\r\n")


def test_reconcile_prints_only_its_summary_when_not_on_a_terminal(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool_without_messages(spool, 3)
    result = run("reconcile", "--spool_dir", str(spool))
    assert (result.returncode, result.stdout) == (0, SUMMARY + "\n")
    assert "re-enqueued an object that had no message" not in result.stderr  # logs are off
    assert result.stderr == ""

"""The local status page over real HTTP, on a real queue: what it shows and what it refuses.

The page in a real browser, after real sends, is in test_status_page_browser.py; here each
request is made by hand, so each refusal (token, Host, Origin, Sec-Fetch-Site, a bad form) is
checked on its own, and so is the fact that a refused request changes nothing.
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from support.messages import make_message

from dicom_ingest.recent_associations import RecentAssociations
from dicom_ingest.status_page import StatusPage, StatusPageConfig
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.message import encode
from ingest.contracts.settings import ConfigError, PortInUse
from receiver import association

DEAD_REASON = "store answered 400: <b>bad</b> & refused"
RETRY_REASON = "store unreachable: connection refused"


@dataclass
class Page:
    page: StatusPage
    queue: SqliteQueue
    associations: RecentAssociations
    dead_id: str
    retrying_id: str

    def request(
        self,
        method: str,
        path: str = "/",
        body: str | None = None,
        headers: dict[str, str] | None = None,
        host: str | None = None,
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.page.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.page.port}")
            sent = {} if body is None else {"Content-Length": str(len(body.encode()))}
            if body is not None:
                sent["Content-Type"] = "application/x-www-form-urlencoded"
            for name, value in {**sent, **(headers or {})}.items():
                connection.putheader(name, value)
            connection.endheaders(body.encode() if body is not None else None)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()

    def requeue(self, form: dict[str, str], **kwargs: object) -> int:
        status, _, _ = self.request("POST", "/requeue", urlencode(form), **kwargs)  # type: ignore[arg-type]
        return status

    def dead_ids(self) -> list[str]:
        return [d.message_id for d in self.queue.dead_letters()]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    queue = SqliteQueue(tmp_path / "queue.sqlite3", max_attempts=100)
    queue.publish(encode(make_message(sop_instance_uid="1.2.3.4.5.1")))
    queue.publish(encode(make_message(sop_instance_uid="1.2.3.4.5.2")))
    dead, retrying = queue.pull(2, lease_seconds=60)
    queue.dead_letter(dead, DEAD_REASON)
    queue.retry(retrying, 600, RETRY_REASON)
    associations = RecentAssociations(size=3)
    status_page = StatusPage(StatusPageConfig(), queue, associations, "IMPORTADAPTER", lambda: 104)
    status_page.start()
    yield Page(status_page, queue, associations, dead.message_id, retrying.message_id)
    status_page.stop()
    queue.close()


def test_page_shows_figures_retrying_and_dead_letters_escaped(page: Page) -> None:
    status, headers, html = page.request("GET")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "same-origin"  # no-referrer: Chromium sends Origin null
    assert "IMPORTADAPTER on port 104" in html
    assert '<div class="figure" id="figure-dead">dead letters<b>1</b></div>' in html
    assert '<div class="figure" id="figure-retrying">retrying<b>1</b></div>' in html
    assert "1.2.3.4.5.1" in html and "1.2.3.4.5.2" in html
    assert "store answered 400: &lt;b&gt;bad&lt;/b&gt; &amp; refused" in html
    assert "<b>bad</b>" not in html
    assert RETRY_REASON in html
    assert f'name="csrf" value="{page.page.token}"' in html


def test_requeue_with_the_token_moves_the_dead_letter_back(page: Page) -> None:
    status, headers, _ = page.request(
        "POST",
        "/requeue",
        urlencode({"csrf": page.page.token, "id": page.dead_id}),
        headers={"Origin": f"http://127.0.0.1:{page.page.port}", "Sec-Fetch-Site": "same-origin"},
    )
    assert status == 303
    assert headers["Location"] == "/?requeued=1"
    assert page.dead_ids() == []
    assert page.queue.stats().pending == 1
    _, _, html = page.request("GET", "/?requeued=1")
    assert "Requeued 1 message(s)" in html
    assert page.requeue({"csrf": page.page.token, "id": page.dead_id}) == 303
    _, _, html = page.request("GET", "/?requeued=0")
    assert "Nothing was requeued" in html


def test_requeue_all(page: Page) -> None:
    assert page.requeue({"csrf": page.page.token, "all": "1"}) == 303
    assert page.dead_ids() == []


@pytest.mark.parametrize(
    ("form", "headers", "expected"),
    [
        ({}, {}, 403),
        ({"csrf": "guessed"}, {}, 403),
        ({"csrf": "TOKEN"}, {"Origin": "http://evil.example"}, 403),
        ({"csrf": "TOKEN"}, {"Origin": "null"}, 403),
        ({"csrf": "TOKEN"}, {"Origin": "http://127.0.0.1:1"}, 403),
        ({"csrf": "TOKEN"}, {"Sec-Fetch-Site": "cross-site"}, 403),
        ({"csrf": "TOKEN"}, {"Sec-Fetch-Site": "same-site"}, 403),
        ({"csrf": "TOKEN", "id": "1 OR 1=1"}, {}, 400),
        ({"csrf": "TOKEN", "id": "\u0661"}, {}, 400),  # an Arabic-Indic digit
        ({"csrf": "TOKEN"}, {}, 400),  # neither an id nor all
        ({"csrf": "TOKEN", "id": "ID", "all": "1"}, {}, 400),
    ],
)
def test_refused_requeue_changes_nothing(
    page: Page, form: dict[str, str], headers: dict[str, str], expected: int
) -> None:
    # Whole values only: the random token itself may contain "ID".
    real = {"TOKEN": page.page.token, "ID": page.dead_id}
    values = {k: real.get(v, v) for k, v in form.items()}
    status, _, html = page.request("POST", "/requeue", urlencode(values), headers=headers)
    assert status == expected, html
    assert page.dead_ids() == [page.dead_id]


def test_request_under_another_host_name_is_refused(page: Page) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 still names evil.example."""
    status, _, html = page.request("GET", host=f"evil.example:{page.page.port}")
    assert status == 403
    assert "1.2.3.4.5.1" not in html
    form = urlencode({"csrf": page.page.token, "id": page.dead_id})
    status, _, _ = page.request("POST", "/requeue", form, host=f"evil.example:{page.page.port}")
    assert status == 403
    assert page.dead_ids() == [page.dead_id]
    assert page.request("GET", host=f"localhost:{page.page.port}")[0] == 200


def test_bad_forms_get_clear_errors(page: Page) -> None:
    token = page.page.token
    big = urlencode({"csrf": token, "id": page.dead_id, "pad": "x" * 5000})
    status, _, html = page.request("POST", "/requeue", big)
    assert status == 413 and "too large" in html
    status, _, html = page.request(
        "POST", "/requeue", "{}", headers={"Content-Type": "application/json"}
    )
    assert status == 415
    assert page.request("POST", "/elsewhere", urlencode({"csrf": token}))[0] == 404
    assert page.request("GET", "/secret")[0] == 404
    assert page.dead_ids() == [page.dead_id]


def test_port_in_use_is_named(page: Page, tmp_path: Path) -> None:
    config = StatusPageConfig(ui_port=page.page.port)
    with pytest.raises(PortInUse, match=rf"--ui_port {page.page.port}: address already in use"):
        StatusPage(config, page.queue, page.associations, "IMPORTADAPTER", lambda: 104)


@pytest.mark.parametrize("port", [-1, 65536])
def test_ui_port_out_of_range(port: int) -> None:
    with pytest.raises(ConfigError, match="--ui_port"):
        StatusPageConfig(ui_port=port)


def _closing_line(calling_ae: str, instances: int) -> None:
    logging.getLogger(association.__name__).info(
        "association released: %d stored",
        instances,
        extra={
            "peer": "127.0.0.1:40000",
            "calling_ae": calling_ae,
            "called_ae": "IMPORTADAPTER",
            "instances": instances,
            "failed": 0,
            "bytes": 1000 * instances,
            "outcome": "released",
            "transport": "tcp",
            "seconds": 0.25,
        },
    )


def test_recent_associations_keep_the_last_closing_lines_fields_only(page: Page) -> None:
    log = logging.getLogger(association.__name__)
    before = log.level
    log.setLevel(logging.INFO)
    page.associations.attach()
    try:
        for n in range(1, 5):
            _closing_line(f"PACS{n}", n)
        log.warning("some other line of the receiver", extra={"peer": "127.0.0.1:1"})
    finally:
        page.associations.detach()
        log.setLevel(before)
    _closing_line("AFTER", 9)  # detached: not kept
    latest = page.associations.latest()
    assert [(r.calling_ae, r.instances) for r in latest] == [
        ("PACS4", 4),
        ("PACS3", 3),
        ("PACS2", 2),
    ]
    assert latest[0].bytes == 4000 and latest[0].outcome == "released"
    _, _, html = page.request("GET")
    assert "PACS4" in html and "PACS1" not in html and "AFTER" not in html


def test_listening_on_all_interfaces_accepts_the_host_name(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    status_page = StatusPage(
        StatusPageConfig(ui_address="0.0.0.0"),
        queue,
        RecentAssociations(),
        "AE",
        lambda: 104,
    )
    try:
        assert f"{socket.gethostname().lower()}:{status_page.port}" in status_page.hosts
        assert f"127.0.0.1:{status_page.port}" in status_page.hosts
        assert status_page.url == f"http://127.0.0.1:{status_page.port}/"
    finally:
        status_page.stop()
        queue.close()

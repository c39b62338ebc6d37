"""The real google-cloud-pubsub clients against the in-memory PubSubServer."""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1 import types
from support.net import wait_until
from support.pubsub_server import PubSubServer, pubsub_host

PROJECT = "test-project"
TIMEOUT = 5.0

Clients = tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]


@pytest.fixture
def signed() -> list[tuple[str, str]]:
    """(audience, service account) of every push token the server signed."""
    return []


@pytest.fixture
def server(signed: list[tuple[str, str]]) -> Iterator[PubSubServer]:
    def signer(audience: str, email: str) -> str:
        signed.append((audience, email))
        return f"jwt-{len(signed)}"

    with PubSubServer(token_signer=signer) as running:
        yield running


@pytest.fixture
def clients(server: PubSubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    publisher.stop()
    publisher.transport.close()
    subscriber.close()


def make_subscription(clients: Clients, name: str, **config: Any) -> tuple[str, str]:
    publisher, subscriber = clients
    topic = publisher.topic_path(PROJECT, name)
    if not any(t.name == topic for t in publisher.list_topics(project=f"projects/{PROJECT}")):
        publisher.create_topic(name=topic)
    subscription = subscriber.subscription_path(PROJECT, name)
    subscriber.create_subscription(request={"name": subscription, "topic": topic, **config})
    return topic, subscription


def publish(publisher: pubsub_v1.PublisherClient, topic: str, *data: bytes, **attrs: str) -> None:
    for future in [publisher.publish(topic, item, **attrs) for item in data]:
        future.result(timeout=TIMEOUT)


def pull_until(
    subscriber: pubsub_v1.SubscriberClient, subscription: str, count: int
) -> list[types.ReceivedMessage]:
    received: list[types.ReceivedMessage] = []

    def more() -> bool:
        response = subscriber.pull(subscription=subscription, max_messages=count - len(received))
        received.extend(response.received_messages)
        return len(received) >= count

    wait_until(more, timeout=TIMEOUT, what=f"{count} messages on {subscription}")
    return received


def pull_once(subscriber: pubsub_v1.SubscriberClient, subscription: str) -> list[Any]:
    return list(subscriber.pull(subscription=subscription, max_messages=10).received_messages)


def test_publish_pull_ack(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "basic")

    ids = [publisher.publish(topic, f"m{i}".encode(), kind="x").result(TIMEOUT) for i in range(3)]
    received = pull_until(subscriber, subscription, 3)

    assert len(set(ids)) == 3
    assert [r.message.message_id for r in received] == ids
    assert [r.message.data for r in received] == [b"m0", b"m1", b"m2"]
    assert all(dict(r.message.attributes) == {"kind": "x"} for r in received)
    assert all(r.delivery_attempt == 0 for r in received)
    assert server.published(topic) == [
        (b"m0", {"kind": "x"}),
        (b"m1", {"kind": "x"}),
        (b"m2", {"kind": "x"}),
    ]
    assert server.backlog(subscription) == 3

    subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in received])

    assert server.backlog(subscription) == 0
    assert pull_once(subscriber, subscription) == []
    assert subscriber.get_subscription(subscription=subscription).ack_deadline_seconds == 10


def test_admin_errors(clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "admin")

    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=topic)
    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_subscription(name=subscription, topic=topic)
    with pytest.raises(exceptions.NotFound):
        subscriber.create_subscription(
            name=subscriber.subscription_path(PROJECT, "orphan"),
            topic=publisher.topic_path(PROJECT, "missing"),
        )
    subscriber.delete_subscription(subscription=subscription)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=subscription)


def test_publish_to_missing_topic_fails(clients: Clients) -> None:
    publisher, _ = clients
    future = publisher.publish(publisher.topic_path(PROJECT, "missing"), b"lost")

    with pytest.raises(exceptions.NotFound):
        future.result(timeout=TIMEOUT)


def test_streaming_pull_delivers_each_message_once(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "stream")
    expected = [f"s{i}".encode() for i in range(40)]
    received: list[bytes] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        with lock:
            received.append(message.data)
        message.ack()

    future = subscriber.subscribe(
        subscription, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=5)
    )
    try:
        publish(publisher, topic, *expected)
        wait_until(
            lambda: len(received) >= len(expected) and server.backlog(subscription) == 0,
            timeout=TIMEOUT,
            what="all messages acked",
        )
    finally:
        future.cancel()
        future.result(timeout=TIMEOUT)

    assert sorted(received) == sorted(expected)


def test_streaming_pull_honours_max_outstanding_messages(server: PubSubServer) -> None:
    topic, subscription = "projects/p/topics/flow", "projects/p/subscriptions/flow"
    with grpc.insecure_channel(server.host) as channel:
        channel.unary_unary(
            "/google.pubsub.v1.Publisher/CreateTopic",
            request_serializer=types.Topic.serialize,
            response_deserializer=types.Topic.deserialize,
        )(types.Topic(name=topic))
        channel.unary_unary(
            "/google.pubsub.v1.Subscriber/CreateSubscription",
            request_serializer=types.Subscription.serialize,
            response_deserializer=types.Subscription.deserialize,
        )(types.Subscription(name=subscription, topic=topic))
        channel.unary_unary(
            "/google.pubsub.v1.Publisher/Publish",
            request_serializer=types.PublishRequest.serialize,
            response_deserializer=types.PublishResponse.deserialize,
        )(types.PublishRequest(topic=topic, messages=[{"data": b"%d" % i} for i in range(7)]))

        outgoing: queue.Queue[types.StreamingPullRequest | None] = queue.Queue()
        outgoing.put(
            types.StreamingPullRequest(
                subscription=subscription,
                stream_ack_deadline_seconds=30,
                max_outstanding_messages=2,
            )
        )
        call = channel.stream_stream(
            "/google.pubsub.v1.Subscriber/StreamingPull",
            request_serializer=types.StreamingPullRequest.serialize,
            response_deserializer=types.StreamingPullResponse.deserialize,
        )(iter(outgoing.get, None), timeout=TIMEOUT)
        seen: list[bytes] = []
        outstanding: list[str] = []
        for response in call:
            batch = list(response.received_messages)
            assert len(outstanding) + len(batch) <= 2
            seen.extend(m.message.data for m in batch)
            outstanding.extend(m.ack_id for m in batch)
            if len(seen) == 7:
                break
            if len(outstanding) == 2:
                outgoing.put(types.StreamingPullRequest(ack_ids=outstanding))
                outstanding = []
        call.cancel()
        outgoing.put(None)

    assert sorted(seen) == [b"%d" % i for i in range(7)]


def test_ack_deadline_expiry_redelivers(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "deadline")
    publish(publisher, topic, b"slow")
    [first] = pull_until(subscriber, subscription, 1)

    leased_at = time.monotonic()
    subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[first.ack_id], ack_deadline_seconds=1
    )
    [second] = pull_until(subscriber, subscription, 1)

    assert time.monotonic() - leased_at >= 1
    assert second.message.message_id == first.message.message_id
    assert second.ack_id != first.ack_id
    subscriber.acknowledge(subscription=subscription, ack_ids=[first.ack_id])
    assert server.backlog(subscription) == 1
    subscriber.acknowledge(subscription=subscription, ack_ids=[second.ack_id])
    assert server.backlog(subscription) == 0


def test_nack_redelivers(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "nack")
    deliveries: list[bytes] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        with lock:
            first_time = message.data not in deliveries
            deliveries.append(message.data)
        if first_time:
            message.nack()
        else:
            message.ack()

    future = subscriber.subscribe(subscription, callback)
    try:
        publish(publisher, topic, b"a", b"b", b"c")
        wait_until(lambda: server.backlog(subscription) == 0, timeout=TIMEOUT, what="acked")
    finally:
        future.cancel()
        future.result(timeout=TIMEOUT)

    assert sorted(deliveries) == [b"a", b"a", b"b", b"b", b"c", b"c"]


def test_nack_waits_for_retry_policy_backoff(clients: Clients) -> None:
    publisher, subscriber = clients
    backoff = timedelta(seconds=0.6)
    policy = {"minimum_backoff": backoff, "maximum_backoff": timedelta(seconds=5)}
    topic, subscription = make_subscription(clients, "backoff", retry_policy=policy)
    publish(publisher, topic, b"later")
    [first] = pull_until(subscriber, subscription, 1)

    nacked_at = time.monotonic()
    subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[first.ack_id], ack_deadline_seconds=0
    )
    [second] = pull_until(subscriber, subscription, 1)

    assert time.monotonic() - nacked_at >= backoff.total_seconds()
    assert second.message.message_id == first.message.message_id


def test_dead_letter_after_max_delivery_attempts(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    dead_topic, dead_subscription = make_subscription(clients, "dead")
    policy = {"dead_letter_topic": dead_topic, "max_delivery_attempts": 5}
    topic, subscription = make_subscription(clients, "poison", dead_letter_policy=policy)
    publish(publisher, topic, b"poison", origin="test")

    attempts = []
    for _ in range(5):
        [received] = pull_until(subscriber, subscription, 1)
        attempts.append(received.delivery_attempt)
        subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )
    [dead] = pull_until(subscriber, dead_subscription, 1)

    assert attempts == [1, 2, 3, 4, 5]
    assert pull_once(subscriber, subscription) == []
    assert server.backlog(subscription) == 0
    assert dead.message.data == b"poison"
    attributes = dict(dead.message.attributes)
    assert attributes["origin"] == "test"
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == "poison"
    assert attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] == PROJECT
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


def _ack_all(subscriber: pubsub_v1.SubscriberClient, subscription: str, count: int) -> list[bytes]:
    received = pull_until(subscriber, subscription, count)
    subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in received])
    return sorted(r.message.data for r in received)


def test_seek_to_time_redelivers_later_messages(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "seek-time")
    publish(publisher, topic, b"before")
    assert _ack_all(subscriber, subscription, 1) == [b"before"]
    cutoff = datetime.now(UTC)
    wait_until(lambda: datetime.now(UTC) > cutoff, timeout=TIMEOUT, what="clock tick")
    publish(publisher, topic, b"after")
    assert _ack_all(subscriber, subscription, 1) == [b"after"]
    assert server.backlog(subscription) == 0

    subscriber.seek(request={"subscription": subscription, "time": cutoff})

    assert server.backlog(subscription) == 1
    assert _ack_all(subscriber, subscription, 1) == [b"after"]

    subscriber.seek(request={"subscription": subscription, "time": cutoff - timedelta(hours=1)})

    assert _ack_all(subscriber, subscription, 2) == [b"after", b"before"]


def test_seek_to_snapshot_restores_acked_state(server: PubSubServer, clients: Clients) -> None:
    publisher, subscriber = clients
    topic, subscription = make_subscription(clients, "seek-snapshot")
    publish(publisher, topic, b"a", b"b")
    received = {r.message.data: r.ack_id for r in pull_until(subscriber, subscription, 2)}
    subscriber.acknowledge(subscription=subscription, ack_ids=[received[b"a"]])
    snapshot = subscriber.snapshot_path(PROJECT, "snap")
    subscriber.create_snapshot(request={"name": snapshot, "subscription": subscription})
    subscriber.acknowledge(subscription=subscription, ack_ids=[received[b"b"]])
    publish(publisher, topic, b"c")
    assert _ack_all(subscriber, subscription, 1) == [b"c"]
    assert server.backlog(subscription) == 0

    subscriber.seek(request={"subscription": subscription, "snapshot": snapshot})

    assert _ack_all(subscriber, subscription, 2) == [b"b", b"c"]
    assert pull_once(subscriber, subscription) == []
    subscriber.delete_snapshot(snapshot=snapshot)
    with pytest.raises(exceptions.NotFound):
        subscriber.seek(request={"subscription": subscription, "snapshot": snapshot})


class PushEndpoint:
    """An HTTP server recording push requests and answering with scripted statuses."""

    def __init__(self, statuses: Callable[[int], int]) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    endpoint.requests.append((self.path, dict(self.headers), body))
                    status = statuses(len(endpoint.requests))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    def received(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


@pytest.fixture
def endpoints() -> Iterator[Callable[[Callable[[int], int]], PushEndpoint]]:
    started: list[PushEndpoint] = []

    def start(statuses: Callable[[int], int]) -> PushEndpoint:
        started.append(PushEndpoint(statuses))
        return started[-1]

    yield start
    for endpoint in started:
        endpoint.close()


def test_push_acks_on_200_and_redelivers_on_500(
    endpoints: Callable[[Callable[[int], int]], PushEndpoint],
    server: PubSubServer,
    clients: Clients,
    signed: list[tuple[str, str]],
) -> None:
    publisher, _ = clients
    endpoint = endpoints(lambda n: 500 if n == 1 else 200)
    push = {"push_endpoint": f"{endpoint.url}/push"}
    topic, subscription = make_subscription(clients, "pushed", push_config=push)

    message_id = publisher.publish(topic, b"\x00payload", study="1.2.3").result(TIMEOUT)
    wait_until(lambda: server.backlog(subscription) == 0, timeout=TIMEOUT, what="push ack")

    requests = endpoint.received()
    assert len(requests) == 2
    for path, headers, body in requests:
        assert path == "/push"
        assert headers["Content-Type"] == "application/json"
        assert "Authorization" not in headers
        assert body["subscription"] == subscription
        assert "deliveryAttempt" not in body
        message = body["message"]
        assert base64.b64decode(message["data"]) == b"\x00payload"
        assert message["attributes"] == {"study": "1.2.3"}
        assert message["messageId"] == message["message_id"] == message_id
        assert message["publishTime"] == message["publish_time"]
        assert datetime.fromisoformat(message["publishTime"]).tzinfo is not None
    assert signed == []


def test_push_sends_oidc_token_and_delivery_attempt(
    endpoints: Callable[[Callable[[int], int]], PushEndpoint],
    server: PubSubServer,
    clients: Clients,
    signed: list[tuple[str, str]],
) -> None:
    publisher, _ = clients
    endpoint = endpoints(lambda n: 503 if n <= 2 else 204)
    dead_topic, _ = make_subscription(clients, "unused-dead")
    email = f"pusher@{PROJECT}.iam.gserviceaccount.com"
    topic, subscription = make_subscription(
        clients,
        "authed",
        push_config={"push_endpoint": endpoint.url, "oidc_token": {"service_account_email": email}},
        dead_letter_policy={"dead_letter_topic": dead_topic},
    )

    publish(publisher, topic, b"x")
    wait_until(lambda: server.backlog(subscription) == 0, timeout=TIMEOUT, what="push ack")

    requests = endpoint.received()
    assert [body["deliveryAttempt"] for _, _, body in requests] == [1, 2, 3]
    assert [headers["Authorization"] for _, headers, _ in requests] == [
        "Bearer jwt-1",
        "Bearer jwt-2",
        "Bearer jwt-3",
    ]
    assert signed == [(endpoint.url, email)] * 3


def test_pubsub_host_starts_a_server_unless_one_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "emulator.example:8085")
    with pubsub_host() as host:
        assert host == "emulator.example:8085"

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    with pubsub_host() as host:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
        publisher = pubsub_v1.PublisherClient()
        try:
            topic = publisher.topic_path(PROJECT, "hosted")
            publisher.create_topic(name=topic)
            assert [t.name for t in publisher.list_topics(project=f"projects/{PROJECT}")] == [topic]
        finally:
            publisher.transport.close()

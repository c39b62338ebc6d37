"""An in-memory Google Cloud Pub/Sub server speaking the real gRPC API.

The real ``google-cloud-pubsub`` clients reach it through ``PUBSUB_EMULATOR_HOST``: topics,
subscriptions, publish, pull and streaming pull, acks and ack deadlines, nacks with retry
policies, dead-letter topics, snapshots and seek, and push subscriptions that POST the real JSON
envelope. Every message a subscription received is kept (acked or not) so that seek works.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import grpc
import requests
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

Ctx = grpc.ServicerContext
Code = grpc.StatusCode
TokenSigner = Callable[[str, str], str]
"""(audience, service_account_email) → a signed OIDC JWT for push requests."""

DEFAULT_ACK_DEADLINE = 10
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
DEFAULT_MIN_BACKOFF = 10.0
DEFAULT_MAX_BACKOFF = 600.0
DEFAULT_RETENTION = timedelta(days=7)
PUSH_ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
PUSH_WORKERS = 4
PUSH_RETRY_DELAY = 0.1
PULL_WAIT = 0.5
POLL = 0.05
STREAM_BATCH = 100
DELETED_TOPIC = "_deleted-topic_"


@dataclass(eq=False)
class _Entry:
    """One message as held by one subscription."""

    message: types.PubsubMessage
    acked: bool = False
    ack_id: str | None = None  # the live lease, if any
    deadline: float = 0.0  # monotonic expiry of the live lease
    available_at: float = 0.0  # monotonic time before which it is not delivered
    attempts: int = 0
    failures: int = 0  # nacks and expiries since the last ack, for the retry backoff


@dataclass(eq=False)
class _Subscription:
    config: types.Subscription
    entries: list[_Entry] = field(default_factory=list)
    leases: dict[str, _Entry] = field(default_factory=dict)
    workers: list[threading.Thread] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def ack_deadline(self) -> int:
        return int(self.config.ack_deadline_seconds)

    @property
    def push(self) -> bool:
        return bool(self.config.push_config.push_endpoint)

    @property
    def max_attempts(self) -> int | None:
        if "dead_letter_policy" not in self.config:
            return None
        return int(self.config.dead_letter_policy.max_delivery_attempts)


@dataclass(eq=False)
class _Snapshot:
    config: types.Snapshot
    acked: frozenset[str]  # message ids acked on the subscription when the snapshot was made


@dataclass(eq=False)
class _Stream:
    deadline: int
    max_messages: int
    issued: set[str] = field(default_factory=set)


def _abort(context: Ctx, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")


def _unary(table: dict[str, tuple[Callable[[Any, Ctx], Any], Any, Any]]) -> dict[str, Any]:
    return {
        name: grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=req.deserialize, response_serializer=resp.serialize
        )
        for name, (handler, req, resp) in table.items()
    }


class _Empty:
    @staticmethod
    def serialize(message: empty_pb2.Empty) -> bytes:
        return bytes(message.SerializeToString())


class PubSubServer:
    """A Pub/Sub service on 127.0.0.1 for the real client library; in-memory and thread-safe."""

    def __init__(self, token_signer: TokenSigner | None = None) -> None:
        self._token_signer = token_signer
        self._cond = threading.Condition(threading.RLock())
        self._topics: dict[str, types.Topic] = {}
        self._topic_subscriptions: dict[str, set[str]] = {}
        self._published: dict[str, list[types.PubsubMessage]] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._message_ids = itertools.count(1)
        self._ack_ids = itertools.count(1)
        self._stopped = False
        self._executor = futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="pubsub")
        self._server: grpc.Server | None = None
        self._port = 0
        self._ticker = threading.Thread(target=self._tick, name="pubsub-leases", daemon=True)

    # lifecycle

    def start(self) -> PubSubServer:
        server = grpc.server(self._executor, options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(self._handlers())
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self._ticker.start()
        return self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            workers = [t for sub in self._subscriptions.values() for t in sub.workers]
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace=None).wait()
        for worker in workers:
            worker.join()
        if self._ticker.is_alive():
            self._ticker.join()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> PubSubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _tick(self) -> None:
        """Expire overdue leases even when nobody is pulling (so dead-lettering happens)."""
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for sub in self._subscriptions.values():
                    self._expire(sub, now)
                self._cond.wait(POLL)

    # test helpers

    def backlog(self, subscription: str) -> int:
        """Messages of the subscription not acknowledged yet (delivered or not)."""
        with self._cond:
            return sum(not e.acked for e in self._subscriptions[subscription].entries)

    def published(self, topic: str) -> list[tuple[bytes, dict[str, str]]]:
        with self._cond:
            return [(m.data, dict(m.attributes)) for m in self._published.get(topic, [])]

    # wiring

    def _handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        t = types
        publisher = {
            "CreateTopic": (self._create_topic, t.Topic, t.Topic),
            "GetTopic": (self._get_topic, t.GetTopicRequest, t.Topic),
            "DeleteTopic": (self._delete_topic, t.DeleteTopicRequest, _Empty),
            "ListTopics": (self._list_topics, t.ListTopicsRequest, t.ListTopicsResponse),
            "ListTopicSubscriptions": (
                self._list_topic_subscriptions,
                t.ListTopicSubscriptionsRequest,
                t.ListTopicSubscriptionsResponse,
            ),
            "Publish": (self._publish, t.PublishRequest, t.PublishResponse),
        }
        subscriber = {
            "CreateSubscription": (self._create_subscription, t.Subscription, t.Subscription),
            "GetSubscription": (self._get_subscription, t.GetSubscriptionRequest, t.Subscription),
            "DeleteSubscription": (self._delete_subscription, t.DeleteSubscriptionRequest, _Empty),
            "ListSubscriptions": (
                self._list_subscriptions,
                t.ListSubscriptionsRequest,
                t.ListSubscriptionsResponse,
            ),
            "Pull": (self._pull, t.PullRequest, t.PullResponse),
            "Acknowledge": (self._acknowledge, t.AcknowledgeRequest, _Empty),
            "ModifyAckDeadline": (self._modify_ack_deadline, t.ModifyAckDeadlineRequest, _Empty),
            "CreateSnapshot": (self._create_snapshot, t.CreateSnapshotRequest, t.Snapshot),
            "DeleteSnapshot": (self._delete_snapshot, t.DeleteSnapshotRequest, _Empty),
            "Seek": (self._seek, t.SeekRequest, t.SeekResponse),
        }
        streaming_pull = grpc.stream_stream_rpc_method_handler(
            self._streaming_pull,
            request_deserializer=t.StreamingPullRequest.deserialize,
            response_serializer=t.StreamingPullResponse.serialize,
        )
        return (
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", _unary(publisher)),
            grpc.method_handlers_generic_handler(
                "google.pubsub.v1.Subscriber",
                {**_unary(subscriber), "StreamingPull": streaming_pull},
            ),
        )

    # publisher

    def _create_topic(self, topic: types.Topic, context: Ctx) -> types.Topic:
        with self._cond:
            if topic.name in self._topics:
                _abort(context, Code.ALREADY_EXISTS, f"Topic already exists: {topic.name}")
            self._topics[topic.name] = topic
            self._topic_subscriptions[topic.name] = set()
            return topic

    def _get_topic(self, request: types.GetTopicRequest, context: Ctx) -> Any:
        with self._cond:
            return self._topic(request.topic, context)

    def _delete_topic(self, request: types.DeleteTopicRequest, context: Ctx) -> Any:
        with self._cond:
            self._topic(request.topic, context)
            del self._topics[request.topic]
            for name in self._topic_subscriptions.pop(request.topic):
                self._subscriptions[name].config.topic = DELETED_TOPIC
            return empty_pb2.Empty()

    def _list_topics(self, request: types.ListTopicsRequest, _: Ctx) -> Any:
        prefix = f"{request.project}/topics/"
        with self._cond:
            topics = [t for name, t in sorted(self._topics.items()) if name.startswith(prefix)]
        return types.ListTopicsResponse(topics=topics)

    def _list_topic_subscriptions(
        self, request: types.ListTopicSubscriptionsRequest, context: Ctx
    ) -> Any:
        with self._cond:
            self._topic(request.topic, context)
            names = sorted(self._topic_subscriptions[request.topic])
        return types.ListTopicSubscriptionsResponse(subscriptions=names)

    def _publish(self, request: types.PublishRequest, context: Ctx) -> Any:
        with self._cond:
            self._topic(request.topic, context)
            ids = [
                self._publish_locked(request.topic, m.data, dict(m.attributes), m.ordering_key)
                for m in request.messages
            ]
        return types.PublishResponse(message_ids=ids)

    def _publish_locked(
        self, topic: str, data: bytes, attributes: dict[str, str], ordering_key: str = ""
    ) -> str:
        message = types.PubsubMessage(
            data=data,
            attributes=attributes,
            message_id=str(next(self._message_ids)),
            publish_time=datetime.now(UTC),
            ordering_key=ordering_key,
        )
        self._published.setdefault(topic, []).append(message)
        for name in self._topic_subscriptions.get(topic, ()):
            self._subscriptions[name].entries.append(_Entry(message))
        self._cond.notify_all()
        return message.message_id

    # subscriptions

    def _create_subscription(self, config: types.Subscription, context: Ctx) -> types.Subscription:
        with self._cond:
            if config.name in self._subscriptions:
                _abort(context, Code.ALREADY_EXISTS, f"Subscription exists: {config.name}")
            self._topic(config.topic, context)
            if not config.ack_deadline_seconds:
                config.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
            if "message_retention_duration" not in config:
                config.message_retention_duration = DEFAULT_RETENTION
            if "dead_letter_policy" in config:
                policy = config.dead_letter_policy
                if not policy.max_delivery_attempts:
                    policy.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
            sub = _Subscription(config)
            self._subscriptions[sub.name] = sub
            self._topic_subscriptions[config.topic].add(sub.name)
            if sub.push:
                for n in range(PUSH_WORKERS):
                    worker = threading.Thread(
                        target=self._push_loop, args=(sub,), name=f"push-{n}", daemon=True
                    )
                    sub.workers.append(worker)
                    worker.start()
            return config

    def _get_subscription(self, request: types.GetSubscriptionRequest, context: Ctx) -> Any:
        with self._cond:
            return self._subscription(request.subscription, context).config

    def _delete_subscription(self, request: types.DeleteSubscriptionRequest, context: Ctx) -> Any:
        with self._cond:
            sub = self._subscription(request.subscription, context)
            del self._subscriptions[sub.name]
            self._topic_subscriptions.get(sub.config.topic, set()).discard(sub.name)
            self._cond.notify_all()
        for worker in sub.workers:
            if worker is not threading.current_thread():
                worker.join()
        return empty_pb2.Empty()

    def _list_subscriptions(self, request: types.ListSubscriptionsRequest, _: Ctx) -> Any:
        prefix = f"{request.project}/subscriptions/"
        with self._cond:
            subs = [
                s.config for n, s in sorted(self._subscriptions.items()) if n.startswith(prefix)
            ]
        return types.ListSubscriptionsResponse(subscriptions=subs)

    # delivery

    def _pull(self, request: types.PullRequest, context: Ctx) -> Any:
        if request.max_messages <= 0:
            _abort(context, Code.INVALID_ARGUMENT, "max_messages must be positive")
        give_up = time.monotonic() + (0.0 if request.return_immediately else PULL_WAIT)
        with self._cond:
            while True:
                sub = self._subscription(request.subscription, context)
                batch = self._take(sub, request.max_messages, sub.ack_deadline)
                remaining = give_up - time.monotonic()
                if batch or remaining <= 0 or self._stopped or not context.is_active():
                    return types.PullResponse(received_messages=batch)
                self._cond.wait(min(POLL, remaining))

    def _streaming_pull(
        self, requests_in: Iterator[types.StreamingPullRequest], context: Ctx
    ) -> Iterator[types.StreamingPullResponse]:
        first = next(requests_in, None)
        if first is None:
            return
        with self._cond:
            sub = self._subscription(first.subscription, context)
            stream = _Stream(
                first.stream_ack_deadline_seconds or sub.ack_deadline,
                first.max_outstanding_messages,
            )
            self._apply(sub, stream, first)
        closed = threading.Event()

        def close() -> None:
            closed.set()
            with self._cond:
                self._cond.notify_all()

        def read() -> None:
            try:
                for request in requests_in:
                    with self._cond:
                        self._apply(sub, stream, request)
            except Exception:
                pass
            finally:
                close()

        context.add_callback(close)
        threading.Thread(target=read, name="streaming-pull-reader", daemon=True).start()
        while not closed.is_set() and context.is_active():
            with self._cond:
                if self._stopped:
                    return
                if self._subscriptions.get(sub.name) is not sub:
                    _abort(context, Code.NOT_FOUND, f"Subscription gone: {sub.name}")
                stream.issued &= sub.leases.keys()
                room = STREAM_BATCH
                if stream.max_messages > 0:
                    room = min(room, stream.max_messages - len(stream.issued))
                batch = self._take(sub, room, stream.deadline) if room > 0 else []
                stream.issued.update(m.ack_id for m in batch)
                if not batch:
                    self._cond.wait(POLL)
                    continue
            yield types.StreamingPullResponse(received_messages=batch)

    def _apply(
        self, sub: _Subscription, stream: _Stream, request: types.StreamingPullRequest
    ) -> None:
        if request.stream_ack_deadline_seconds:
            stream.deadline = request.stream_ack_deadline_seconds
        for ack_id in request.ack_ids:
            self._ack(sub, ack_id)
        pairs = zip(request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False)
        for ack_id, seconds in pairs:
            self._modify(sub, ack_id, seconds)

    def _acknowledge(self, request: types.AcknowledgeRequest, context: Ctx) -> Any:
        with self._cond:
            sub = self._subscription(request.subscription, context)
            for ack_id in request.ack_ids:
                self._ack(sub, ack_id)
        return empty_pb2.Empty()

    def _modify_ack_deadline(self, request: types.ModifyAckDeadlineRequest, context: Ctx) -> Any:
        if not 0 <= request.ack_deadline_seconds <= 600:
            _abort(context, Code.INVALID_ARGUMENT, "ack_deadline_seconds not in 0..600")
        with self._cond:
            sub = self._subscription(request.subscription, context)
            for ack_id in request.ack_ids:
                self._modify(sub, ack_id, request.ack_deadline_seconds)
        return empty_pb2.Empty()

    def _take(self, sub: _Subscription, limit: int, deadline: int) -> list[types.ReceivedMessage]:
        """Lease up to `limit` deliverable messages; call with the lock held."""
        now = time.monotonic()
        self._expire(sub, now)
        batch: list[types.ReceivedMessage] = []
        for entry in list(sub.entries):
            if len(batch) >= limit:
                break
            if entry.acked or entry.ack_id is not None or entry.available_at > now:
                continue
            if sub.max_attempts is not None and entry.attempts >= sub.max_attempts:
                self._dead_letter(sub, entry)
                continue
            entry.attempts += 1
            entry.ack_id = f"{next(self._ack_ids)}-{entry.message.message_id}"
            entry.deadline = now + deadline
            sub.leases[entry.ack_id] = entry
            batch.append(
                types.ReceivedMessage(
                    ack_id=entry.ack_id,
                    message=entry.message,
                    delivery_attempt=entry.attempts if sub.max_attempts is not None else 0,
                )
            )
        return batch

    def _ack(self, sub: _Subscription, ack_id: str) -> None:
        entry = sub.leases.pop(ack_id, None)
        if entry is not None:
            entry.acked, entry.ack_id, entry.failures = True, None, 0
            self._cond.notify_all()

    def _modify(self, sub: _Subscription, ack_id: str, seconds: int) -> None:
        entry = sub.leases.get(ack_id)
        if entry is None:
            return
        now = time.monotonic()
        if seconds > 0:
            entry.deadline = now + seconds
        else:
            self._release(sub, entry, now)

    def _expire(self, sub: _Subscription, now: float) -> None:
        for entry in [e for e in sub.leases.values() if e.deadline <= now]:
            self._release(sub, entry, entry.deadline)

    def _release(self, sub: _Subscription, entry: _Entry, at: float) -> None:
        """End a lease unacked (nack or expiry): redeliver after the retry backoff."""
        if entry.ack_id is not None:
            sub.leases.pop(entry.ack_id, None)
        entry.ack_id = None
        if sub.max_attempts is not None and entry.attempts >= sub.max_attempts:
            self._dead_letter(sub, entry)
            return
        entry.failures += 1
        entry.available_at = at + self._retry_delay(sub, entry.failures)
        self._cond.notify_all()

    @staticmethod
    def _retry_delay(sub: _Subscription, failures: int) -> float:
        if "retry_policy" not in sub.config:
            return PUSH_RETRY_DELAY if sub.push else 0.0
        policy = sub.config.retry_policy
        low = DEFAULT_MIN_BACKOFF
        high = DEFAULT_MAX_BACKOFF
        if "minimum_backoff" in policy:
            low = policy.minimum_backoff.total_seconds()
        if "maximum_backoff" in policy:
            high = policy.maximum_backoff.total_seconds()
        return float(min(low * 2 ** (failures - 1), high))

    def _dead_letter(self, sub: _Subscription, entry: _Entry) -> None:
        entry.acked = True
        topic = sub.config.dead_letter_policy.dead_letter_topic
        if topic not in self._topics:
            return
        _, project, _, subscription_id = sub.name.split("/")
        attributes = dict(entry.message.attributes)
        attributes.update(
            CloudPubSubDeadLetterSourceSubscription=subscription_id,
            CloudPubSubDeadLetterSourceSubscriptionProject=project,
            CloudPubSubDeadLetterSourceDeliveryCount=str(entry.attempts),
            CloudPubSubDeadLetterSourceTopicPublishTime=_rfc3339(entry.message.publish_time),
        )
        self._publish_locked(topic, entry.message.data, attributes, entry.message.ordering_key)

    # snapshots and seek

    def _create_snapshot(self, request: types.CreateSnapshotRequest, context: Ctx) -> Any:
        with self._cond:
            if request.name in self._snapshots:
                _abort(context, Code.ALREADY_EXISTS, f"Snapshot exists: {request.name}")
            sub = self._subscription(request.subscription, context)
            snapshot = types.Snapshot(
                name=request.name,
                topic=sub.config.topic,
                expire_time=datetime.now(UTC) + timedelta(days=7),
                labels=request.labels,
            )
            acked = frozenset(e.message.message_id for e in sub.entries if e.acked)
            self._snapshots[request.name] = _Snapshot(snapshot, acked)
            return snapshot

    def _delete_snapshot(self, request: types.DeleteSnapshotRequest, context: Ctx) -> Any:
        with self._cond:
            if self._snapshots.pop(request.snapshot, None) is None:
                _abort(context, Code.NOT_FOUND, f"Snapshot not found: {request.snapshot}")
        return empty_pb2.Empty()

    def _seek(self, request: types.SeekRequest, context: Ctx) -> Any:
        with self._cond:
            sub = self._subscription(request.subscription, context)
            if request.snapshot:
                snapshot = self._snapshots.get(request.snapshot)
                if snapshot is None:
                    _abort(context, Code.NOT_FOUND, f"No snapshot {request.snapshot}")
                if snapshot.config.topic != sub.config.topic:
                    _abort(context, Code.FAILED_PRECONDITION, "Snapshot of other topic")
                acked = snapshot.acked
            elif "time" in request:
                cutoff = request.time
                acked = frozenset(
                    e.message.message_id for e in sub.entries if e.message.publish_time < cutoff
                )
            else:
                _abort(context, Code.INVALID_ARGUMENT, "Seek needs a time or snapshot")
            sub.leases.clear()
            for entry in sub.entries:
                entry.acked = entry.message.message_id in acked
                entry.ack_id, entry.available_at, entry.failures = None, 0.0, 0
            self._cond.notify_all()
        return types.SeekResponse()

    # push

    def _push_loop(self, sub: _Subscription) -> None:
        while True:
            with self._cond:
                batch: list[types.ReceivedMessage] = []
                while not batch:
                    if self._stopped or self._subscriptions.get(sub.name) is not sub:
                        return
                    batch = self._take(sub, 1, sub.ack_deadline)
                    if not batch:
                        self._cond.wait(POLL)
            received = batch[0]
            delivered = self._post(sub, received)
            with self._cond:
                if delivered:
                    self._ack(sub, received.ack_id)
                else:
                    self._modify(sub, received.ack_id, 0)

    def _post(self, sub: _Subscription, received: types.ReceivedMessage) -> bool:
        push = sub.config.push_config
        message = received.message
        published = _rfc3339(message.publish_time)
        body: dict[str, Any] = {
            "message": {
                "data": base64.b64encode(message.data).decode("ascii"),
                "attributes": dict(message.attributes),
                "messageId": message.message_id,
                "message_id": message.message_id,
                "publishTime": published,
                "publish_time": published,
            },
            "subscription": sub.name,
        }
        if message.ordering_key:
            body["message"]["orderingKey"] = message.ordering_key
        if sub.max_attempts is not None:
            body["deliveryAttempt"] = received.delivery_attempt
        headers = {"Content-Type": "application/json"}
        if "oidc_token" in push and self._token_signer is not None:
            audience = push.oidc_token.audience or push.push_endpoint
            token = self._token_signer(audience, push.oidc_token.service_account_email)
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = requests.post(
                push.push_endpoint,
                data=json.dumps(body).encode(),
                headers=headers,
                timeout=sub.ack_deadline,
            )
        except requests.RequestException:
            return False
        response.close()
        return response.status_code in PUSH_ACK_STATUSES

    # lookups (lock held)

    def _topic(self, name: str, context: Ctx) -> types.Topic:
        topic = self._topics.get(name)
        if topic is None:
            _abort(context, Code.NOT_FOUND, f"Topic not found: {name}")
        return topic

    def _subscription(self, name: str, context: Ctx) -> _Subscription:
        sub = self._subscriptions.get(name)
        if sub is None:
            _abort(context, Code.NOT_FOUND, f"Subscription does not exist: {name}")
        return sub


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@contextmanager
def pubsub_host() -> Iterator[str]:
    """The Pub/Sub host for tests: $PUBSUB_EMULATOR_HOST if set, else a fresh PubSubServer."""
    existing = os.environ.get("PUBSUB_EMULATOR_HOST")
    if existing:
        yield existing
        return
    with PubSubServer() as server:
        yield server.host

"""Requests from Amazon SQS (moto in server mode, over HTTP): at-least-once delivery changes
nothing twice, unusable messages go to the dead-letter queue with the reason, passing failures
are left for SQS to deliver again."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from dsr.adapters.mail import SmtpConfig
from dsr.adapters.queue import QueueConsumer
from dsr.intake import Intake
from dsr.service import DsrService

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server", reason="the queue tests need moto[server]")


class _Inbox:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd hook
        self.count += 1
        return "250 OK"


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sqs(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)
    return boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="eu-west-1")


@pytest.fixture
def smtp() -> Iterator[SmtpConfig]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(_Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    yield SmtpConfig(host="127.0.0.1", port=port, starttls=False, sender="privacy@precision.test",
                     recipients=("privacy@precision.test",))
    controller.stop()


def _queues(sqs) -> tuple[str, str]:
    name = uuid.uuid4().hex[:8]
    return (sqs.create_queue(QueueName=f"dsr-intake-{name}")["QueueUrl"],
            sqs.create_queue(QueueName=f"dsr-intake-dlq-{name}")["QueueUrl"])


def _body(**changes: Any) -> dict[str, Any]:
    body = {"subject_request_id": str(uuid.uuid4()), "subject_request_type": "erasure",
            "submitted_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
            "subject_identities": [{"identity_type": "email", "identity_value": "queue.subject@example.com",
                                    "identity_format": "raw"}],
            "regulation": "gdpr"}
    body.update(changes)
    return body


def _all(sqs, url: str) -> list[dict[str, Any]]:
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                MessageAttributeNames=["All"]).get("Messages", [])
    return found


def test_messages_become_requests_once_and_bad_ones_are_dead_lettered(
        crm_only_service: DsrService, sqs, smtp: SmtpConfig, caplog: pytest.LogCaptureFixture) -> None:
    source, dead = _queues(sqs)
    good = _body()
    sqs.send_message(QueueUrl=source, MessageBody=json.dumps(good))
    sqs.send_message(QueueUrl=source, MessageBody=json.dumps(good))  # delivered twice
    sqs.send_message(QueueUrl=source, MessageBody="{not json")
    sqs.send_message(QueueUrl=source, MessageBody=json.dumps(_body(subject_request_type="delete-me")))
    consumer = QueueConsumer(Intake(crm_only_service, lambda: smtp), sqs, source, dead)
    report = consumer.drain(wait_seconds=0)
    assert (report.received, report.accepted, report.repeated, report.dead_lettered) == (4, 1, 1, 2)
    assert [r.request_id for r in crm_only_service.list()] == [good["subject_request_id"]]
    assert _all(sqs, source) == []
    reasons = sorted(m["MessageAttributes"]["dsr_reason"]["StringValue"] for m in _all(sqs, dead))
    assert reasons[0] == "body: not JSON" and reasons[1].startswith("subject_request_type")
    assert "queue.subject" not in caplog.text


def test_a_passing_failure_is_left_for_sqs_then_dead_lettered_after_the_last_try(
        crm_only_service: DsrService, sqs) -> None:
    source, dead = _queues(sqs)
    sqs.send_message(QueueUrl=source, MessageBody=json.dumps(_body()))
    # No mail server configured: the intake cannot send a code (a passing failure).
    consumer = QueueConsumer(Intake(crm_only_service, lambda: None), sqs, source, dead, max_receives=2,
                             retry_delay_seconds=0)
    first = consumer.poll_once(wait_seconds=0)
    assert (first.left_for_retry, first.dead_lettered) == (1, 0)
    second = consumer.poll_once(wait_seconds=0)
    assert second.dead_lettered == 1
    [letter] = _all(sqs, dead)
    assert letter["MessageAttributes"]["dsr_reason"]["StringValue"].startswith("gave up after")
    assert crm_only_service.list() == []

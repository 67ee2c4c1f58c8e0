"""Requests arriving on a queue (Amazon SQS): the same intake as the web form, at least once.

SQS delivers every message at least once, so a message may arrive twice: the intake is
idempotent on the OpenDSR request id, so the second copy changes nothing. A message that can
never be accepted (not JSON, a body the intake refuses, an id already used for other content)
goes to the dead-letter queue with the reason and leaves the source queue; a message that fails
for a passing reason (the mail server is down) is left for SQS to deliver again, and is
dead-lettered only after `max_receives` tries. Message bodies hold personal data: they are
never logged, and the reason attached to a dead letter names fields only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from dsr.intake import Intake, IntakeConflict, IntakeInvalid

log = logging.getLogger(__name__)


@dataclass
class ConsumeReport:
    received: int = 0
    accepted: int = 0  # new requests recorded
    repeated: int = 0  # copies of requests already recorded (at-least-once delivery)
    dead_lettered: int = 0
    left_for_retry: int = 0


class QueueConsumer:
    """Moves OpenDSR messages from an SQS queue into the intake."""

    def __init__(self, intake: Intake, sqs: Any, queue_url: str, dead_letter_url: str, *,
                 max_receives: int = 5, retry_delay_seconds: int = 60) -> None:
        self.intake, self.sqs = intake, sqs
        self.queue_url, self.dead_letter_url = queue_url, dead_letter_url
        self.max_receives = max_receives
        self.retry_delay_seconds = retry_delay_seconds

    def poll_once(self, *, wait_seconds: int = 1, max_messages: int = 10) -> ConsumeReport:
        """One receive (long poll up to `wait_seconds`); every message handled or left for retry."""
        report = ConsumeReport()
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=max_messages,
                                          WaitTimeSeconds=wait_seconds, AttributeNames=["ApproximateReceiveCount"])
        for message in answer.get("Messages", []):
            report.received += 1
            self._handle(message, report)
        return report

    def drain(self, *, wait_seconds: int = 1, max_polls: int = 100) -> ConsumeReport:
        """Poll until a receive comes back empty (or `max_polls`); the totals."""
        total = ConsumeReport()
        for _ in range(max_polls):
            report = self.poll_once(wait_seconds=wait_seconds)
            for name in total.__dataclass_fields__:
                setattr(total, name, getattr(total, name) + getattr(report, name))
            if report.received == 0:
                break
        return total

    def _handle(self, message: dict[str, Any], report: ConsumeReport) -> None:
        receipt = message["ReceiptHandle"]
        try:
            body = json.loads(message["Body"])
        except (ValueError, TypeError):
            self._dead_letter(message, "body: not JSON")
            report.dead_lettered += 1
            return
        try:
            outcome = self.intake.submit(body)
        except IntakeInvalid as exc:
            self._dead_letter(message, str(exc)[:1000])  # field names and problems, never values
            report.dead_lettered += 1
            return
        except IntakeConflict:
            self._dead_letter(message, "subject_request_id: already used for a request with other content")
            report.dead_lettered += 1
            return
        except Exception as exc:  # noqa: BLE001 - a passing failure: SQS delivers it again
            receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            if receives >= self.max_receives:
                self._dead_letter(message, f"gave up after {receives} tries ({type(exc).__name__})")
                report.dead_lettered += 1
            else:
                log.warning("queue message %s not taken yet (%s); SQS will deliver it again",
                            message.get("MessageId"), type(exc).__name__)
                self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt,
                                                   VisibilityTimeout=self.retry_delay_seconds)
                report.left_for_retry += 1
            return
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        if outcome.created:
            report.accepted += 1
        else:
            report.repeated += 1

    def _dead_letter(self, message: dict[str, Any], reason: str) -> None:
        self.sqs.send_message(QueueUrl=self.dead_letter_url, MessageBody=message["Body"], MessageAttributes={
            "dsr_reason": {"DataType": "String", "StringValue": reason},
            "dsr_source_message_id": {"DataType": "String", "StringValue": str(message.get("MessageId", ""))},
        })
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        log.warning("queue message %s dead-lettered: %s", message.get("MessageId"), reason.split(":")[0])

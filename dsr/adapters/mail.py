"""Where escalations go: e-mail over SMTP and an HTTP webhook (Slack-compatible JSON).

Messages name the request, regime, due date, what is still open and who owns it. They never
carry personal data: the subject is not named, not even by hash (a hash is useless to the
reader and still an identifier).
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Annotated, Any, Protocol

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


class NotifyError(RuntimeError):
    """A channel could not deliver; the message names the channel, never the content."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert, ready to send."""

    subject: str
    body: str
    fields: Mapping[str, Any]  # structured copy for machines (webhooks)


class Channel(Protocol):
    name: str

    def send(self, notice: Notice) -> None: ...


def _secret(name: str | None, field: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise NotifyError(f"{field}: environment variable {name} is not set")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpConfig(_Strict):
    host: str | None = None
    host_env: str | None = None
    port: Annotated[int, Field(gt=0, lt=65536)] = 587
    starttls: bool = True
    tls_ca_file: str | None = None  # trust this CA (a private relay); default: the system's
    username_env: str | None = None
    password_env: str | None = None
    sender: str
    recipients: tuple[str, ...]
    timeout_seconds: float = 10.0

    @model_validator(mode="after")
    def _one_host(self) -> SmtpConfig:
        if (self.host is None) == (self.host_env is None):
            raise ValueError("set exactly one of host or host_env")
        if not self.recipients:
            raise ValueError("recipients: at least one")
        return self


class WebhookConfig(_Strict):
    url: str | None = None
    url_env: str | None = None  # webhook URLs are secrets (Slack's are bearer tokens)
    timeout_seconds: float = 10.0

    @model_validator(mode="after")
    def _one_url(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url or url_env")
        return self


class SmtpChannel:
    name = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def send(self, notice: Notice) -> None:
        c = self.config
        host = c.host or _secret(c.host_env, "escalation.email.host_env") or ""
        message = EmailMessage()
        message["From"] = c.sender
        message["To"] = ", ".join(c.recipients)
        message["Subject"] = notice.subject
        message.set_content(notice.body)
        try:
            with smtplib.SMTP(host, c.port, timeout=c.timeout_seconds) as smtp:
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=c.tls_ca_file))
                user = _secret(c.username_env, "escalation.email.username_env")
                if user is not None:
                    smtp.login(user, _secret(c.password_env, "escalation.email.password_env") or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"email via {host}:{c.port}: {type(exc).__name__}") from exc


class WebhookChannel:
    name = "webhook"

    def __init__(self, config: WebhookConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()

    def send(self, notice: Notice) -> None:
        url = self.config.url or _secret(self.config.url_env, "escalation.webhook.url_env") or ""
        # Slack reads "text"; other receivers get the structured copy under "dsr".
        payload: dict[str, Any] = {"text": f"*{notice.subject}*\n{notice.body}", "dsr": dict(notice.fields)}
        try:
            answer = self.session.post(url, json=payload, timeout=self.config.timeout_seconds)
        except requests.RequestException as exc:
            raise NotifyError(f"webhook: {type(exc).__name__}") from None  # the URL may hold a token
        if answer.status_code >= 300:
            raise NotifyError(f"webhook: answered HTTP {answer.status_code}")


class ChannelsConfig(_Strict):
    email: SmtpConfig | None = None
    webhook: WebhookConfig | None = None

    def build(self) -> list[Channel]:
        channels: list[Channel] = []
        if self.email is not None:
            channels.append(SmtpChannel(self.email))
        if self.webhook is not None:
            channels.append(WebhookChannel(self.webhook))
        return channels


def deliver(channels: Sequence[Channel], notice: Notice) -> dict[str, str]:
    """Send through every channel; return each one's result ('sent' or the failure)."""
    results: dict[str, str] = {}
    for channel in channels:
        try:
            channel.send(notice)
            results[channel.name] = "sent"
        except NotifyError as exc:
            log.warning("escalation channel failed: %s", exc)
            results[channel.name] = f"failed: {exc}"
    return results

"""Pluggable message senders: a JSON-lines file (the default; also logged) and SMTP.

A sender gets the rendered message with the recipient address (read from profile at send
time and never stored by notification) and returns the provider's message id. It raises
on failure; the caller retries with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

from continuum.common.v1 import channel_pb2
from continuum_notification.settings import SenderSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    channel: int
    recipient: str
    subject: str
    body: str
    campaign_id: str


class Sender(Protocol):
    name: str

    async def send(self, message: Outgoing) -> str:
        """Hand the message over; the provider's message id."""
        ...


class FileSender:
    """Appends one JSON line per message to a file (and logs the id): for development,
    tests and deployments where another system picks the messages up."""

    name = "log"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    async def send(self, message: Outgoing) -> str:
        provider_id = f"log-{message.message_id}"
        line = json.dumps(
            {
                "provider_message_id": provider_id,
                "message_id": message.message_id,
                "channel": channel_pb2.Channel.Name(message.channel),  # type: ignore[arg-type]
                "to": message.recipient,
                "subject": message.subject,
                "body": message.body,
                "campaign_id": message.campaign_id,
                "time": datetime.now(UTC).isoformat(),
            }
        )
        async with self._lock:
            await asyncio.to_thread(self._append, line)
        log.info("message written", extra={"message_id": message.message_id})
        return provider_id


class SmtpSender:
    """E-mail through an SMTP server (smtplib in a worker thread). Other channels go to
    the fallback sender."""

    name = "smtp"

    def __init__(self, settings: SenderSettings, fallback: Sender) -> None:
        self._settings = settings
        self._fallback = fallback

    def _deliver(self, email: EmailMessage) -> None:
        s = self._settings
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as client:
            if s.smtp_starttls:
                client.starttls()
            if s.smtp_username:
                client.login(s.smtp_username, s.smtp_password)
            client.send_message(email)

    async def send(self, message: Outgoing) -> str:
        if message.channel != channel_pb2.CHANNEL_EMAIL:
            return await self._fallback.send(message)
        email = EmailMessage()
        email["From"] = self._settings.from_address
        email["To"] = message.recipient
        email["Subject"] = message.subject
        msgid = make_msgid(idstring=message.message_id.replace("-", ""))
        email["Message-ID"] = msgid
        email["X-Continuum-Campaign"] = message.campaign_id
        email.set_content(message.body)
        await asyncio.to_thread(self._deliver, email)
        return msgid


def make_sender(settings: SenderSettings) -> Sender:
    file_sender = FileSender(settings.file_path)
    if settings.kind == "smtp":
        return SmtpSender(settings, file_sender)
    return file_sender

"""Outgoing e-mail (invitations, password resets, reminders) over SMTP."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from vault.services.errors import N_, ServiceError
from vault.settings import Settings

SMTP_TIMEOUT_SECONDS = 20
DEFAULT_SENDER = "recording-vault@localhost"


class MailNotSent(ServiceError):
    message = N_("The e-mail could not be sent. The link is shown here instead.")


@dataclass(frozen=True)
class Mailer:
    """Configured from VAULT_SMTP_URL: smtp://[user:pass@]host[:port][?starttls=1] or smtps://."""

    url: str
    sender: str

    def send(self, recipient: str, subject: str, body: str) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise MailNotSent()
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = subject
        message.set_content(body)
        query = parse_qs(parts.query)
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
        try:
            if parts.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    parts.hostname,
                    port,
                    timeout=SMTP_TIMEOUT_SECONDS,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(parts.hostname, port, timeout=SMTP_TIMEOUT_SECONDS)
            with client:
                if query.get("starttls", ["0"])[0] in ("1", "true", "yes"):
                    client.starttls(context=ssl.create_default_context())
                if parts.username:
                    client.login(unquote(parts.username), unquote(parts.password or ""))
                client.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailNotSent() from exc


def configured_mailer(settings: Settings) -> Mailer | None:
    """The mailer VAULT_SMTP_URL configures, or None when the school sends no e-mail."""
    if not settings.smtp_url:
        return None
    return Mailer(settings.smtp_url, settings.mail_from or DEFAULT_SENDER)

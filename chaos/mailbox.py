"""The run's SMTP sink, read back: one `MailRow` per message it kept (`sandbox.mailsink` writes
each as an `.eml` file named by its arrival time), by the headers our notifications carry to
name what they announce (`X-Booking-Reference`, `X-Booking-Status-Version`,
`X-Notification-Kind`, and `X-Booking-Included-Versions`: the money changes a status mail tells
beside its own; docs/design.md, "Notifications"), with its text: the words the customer
read (the money checks look for what a refund refused for good told them)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

from chaos.model import MailRow

ARRIVAL_FORMAT = "%Y%m%dT%H%M%S.%fZ"


def read(directory: Path) -> list[MailRow]:
    """Every message kept in `directory`, in arrival order (a missing directory: none)."""
    if not directory.is_dir():
        return []
    parser = BytesParser(policy=default_policy)
    rows = []
    for path in sorted(directory.glob("*.eml")):
        with path.open("rb") as handle:
            message = parser.parse(handle)
        version = str(message.get("X-Booking-Status-Version", "")).strip()
        included = str(message.get("X-Booking-Included-Versions", "")).split(",")
        rows.append(
            MailRow(
                reference=str(message.get("X-Booking-Reference", "")).strip(),
                version=int(version) if version.isdigit() else None,
                kind=str(message.get("X-Notification-Kind", "")).strip(),
                message_id=str(message.get("Message-ID", "")).strip(),
                received_at=arrived_at(path),
                file=path.name,
                text=plain_text(message),
                included=tuple(int(v) for v in (v.strip() for v in included) if v.isdigit()),
            )
        )
    return rows


def plain_text(message: EmailMessage) -> str:
    """The message's text part (our mails carry one beside their HTML), decoded; "" if none."""
    body = message.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""


def arrived_at(path: Path) -> datetime:
    """The sink names each file by its arrival (UTC) first: `<time>-<pid>-<sequence>.eml`."""
    stamp = path.name.split("-", 1)[0]
    try:
        return datetime.strptime(stamp, ARRIVAL_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)

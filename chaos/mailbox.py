"""The run's SMTP sink, read back: one `MailRow` per message it kept (`sandbox.mailsink` writes
each as an `.eml` file named by its arrival time), by the headers our notifications carry to
name what they announce (`X-Booking-Reference`, `X-Booking-Status-Version`,
`X-Notification-Kind`; docs/design.md, "Notifications")."""

from __future__ import annotations

from datetime import UTC, datetime
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
            headers = parser.parse(handle, headersonly=True)
        version = str(headers.get("X-Booking-Status-Version", "")).strip()
        rows.append(
            MailRow(
                reference=str(headers.get("X-Booking-Reference", "")).strip(),
                version=int(version) if version.isdigit() else None,
                kind=str(headers.get("X-Notification-Kind", "")).strip(),
                message_id=str(headers.get("Message-ID", "")).strip(),
                received_at=arrived_at(path),
                file=path.name,
            )
        )
    return rows


def arrived_at(path: Path) -> datetime:
    """The sink names each file by its arrival (UTC) first: `<time>-<pid>-<sequence>.eml`."""
    stamp = path.name.split("-", 1)[0]
    try:
        return datetime.strptime(stamp, ARRIVAL_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)

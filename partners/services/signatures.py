"""Standard Webhooks signatures (docs/partner-protocols.md, "Webhooks"), checked over the raw body.

The standardwebhooks library decodes the body as UTF-8 before it signs it, so a correctly signed
body that is not UTF-8 raised inside `verify` and was refused as a bad signature; its errors are
also its own words ("Missing required headers", or a Python exception's for a malformed header).
The scheme is one HMAC, so it is done here over the bytes as received, with our own messages: a
delivery whose signature verifies is authentic whatever its body holds (reading it comes after).

The secret's rule is Standard Webhooks': `whsec_` followed by the base64 of the key. A secret is
entered under that rule (`secret_problem`, `partner_upsert`); it is read as the library reads it
(`secret_key`: the prefix optional, base64 read leniently), so a secret stored before the rule,
or set in the environment, verifies as it did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime

SECRET_PREFIX = "whsec_"
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"
SECRET_RULE = "whsec_ followed by the base64 of the key, as Standard Webhooks secrets are written"


def secret_problem(secret: str) -> str:
    """Why a secret as entered does not follow the rule ('' when it does)."""
    if not secret.startswith(SECRET_PREFIX):
        return f"it does not start with {SECRET_PREFIX}"
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return f"what follows {SECRET_PREFIX} is not base64"
    return "" if key else f"no key follows {SECRET_PREFIX}"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret, read as the standardwebhooks library reads it; b'' for none."""
    try:
        # b64decode skips what is not base64 and extra padding, as the library's call does.
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    except (binascii.Error, ValueError):
        return b""


def sign(key: bytes, event_id: str, timestamp: str, raw: bytes) -> bytes:
    """The HMAC of a delivery: over the bytes as sent, never re-encoded."""
    return hmac.new(key, f"{event_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()


def signed_time(headers: dict[str, str]) -> datetime | None:
    """`webhook-timestamp` (unix seconds, digits only), or None when it is not that."""
    text = headers.get(TIMESTAMP_HEADER, "")
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return datetime.fromtimestamp(int(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _decoded(signature: str) -> bytes | None:
    try:
        return base64.b64decode(signature + "=" * (-len(signature) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def signature_problem(key: bytes, raw: bytes, headers: dict[str, str]) -> str:
    """Why no signature in `webhook-signature` is the delivery's, whatever its age ('' when one
    is; headers by lower-cased name). Entries of another version are skipped; a malformed one
    matters only when none matches."""
    for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        if not headers.get(name, "").strip():
            return f"the {name} header is missing or empty"
    if signed_time(headers) is None:
        return f"the {TIMESTAMP_HEADER} header is not unix seconds"
    expected = sign(key, headers[ID_HEADER], headers[TIMESTAMP_HEADER], raw)
    malformed = v1 = 0
    for entry in headers[SIGNATURE_HEADER].split():
        version, comma, encoded = entry.partition(",")
        offered = _decoded(encoded) if comma and encoded else None
        if offered is None:
            malformed += 1
        elif version == "v1":
            v1 += 1
            if hmac.compare_digest(expected, offered):
                return ""
    if malformed:
        return f"the {SIGNATURE_HEADER} header is not a space-separated list of v1,<base64> signatures"
    if not v1:
        return f"the {SIGNATURE_HEADER} header holds no v1 signature"
    return (
        f"no v1 signature in the {SIGNATURE_HEADER} header matches the delivery "
        "(signed with another secret, or its body, id or timestamp changed)"
    )

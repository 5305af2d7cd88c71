"""API keys and signed page tokens.

A key is ``glk_<43 url-safe chars>`` (256 random bits). The database stores only HMAC-SHA256(server
secret, key) (as Polar does), so a leaked table does not leak usable keys, and lookup is one indexed
equality. Page tokens are HMAC-signed so a client cannot forge or edit one; they carry only a
position and never grant access (every list query is filtered by the caller's tenant anyway).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

KEY_PREFIX = "glk_"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def key_display_prefix(key: str) -> str:
    """The first characters of a key, safe to show and log."""
    return key[: len(KEY_PREFIX) + 6]


class BadToken(ValueError):
    """A page token that was not issued by this server (or was altered)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(payload: dict[str, Any], secret: bytes, purpose: str) -> str:
    """An opaque token for ``payload``; ``purpose`` keeps tokens of one list from working on another."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(secret, purpose.encode() + b"\0" + body, hashlib.sha256).digest()[:16]
    return _b64(body) + "." + _b64(mac)


def verify_token(token: str, secret: bytes, purpose: str) -> dict[str, Any]:
    try:
        body_part, mac_part = token.split(".", 1)
        body, mac = _unb64(body_part), _unb64(mac_part)
    except (ValueError, TypeError) as e:
        raise BadToken("malformed page token") from e
    expected = hmac.new(secret, purpose.encode() + b"\0" + body, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, expected):
        raise BadToken("page token not valid here")
    try:
        payload = json.loads(body)
    except ValueError as e:
        raise BadToken("malformed page token") from e
    if not isinstance(payload, dict):
        raise BadToken("malformed page token")
    return payload


def request_hash(body: Any) -> str:
    """SHA-256 of the canonical JSON of a request body (Idempotency-Key comparison ignores formatting)."""
    canon = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()

"""Password protection for the REST API (HTTP Basic) and the UI (Gradio's login), from one setting.

`SFT_UI_AUTH=user:password` (several separated by commas or newlines) or `SFT_UI_AUTH_FILE` (one
`user:password` per line). Passwords are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

PROTECTED_PREFIXES = ("/api/", "/docs", "/redoc", "/openapi.json")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def parse_users(spec: str | None) -> dict[str, str]:
    """{user: password}; raises ValueError on an entry without 'user:password'."""
    users: dict[str, str] = {}
    for entry in (spec or "").replace(",", "\n").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ValueError("SFT_UI_AUTH entries must look like user:password")
        users[user] = password
    return users


def check(users: dict[str, str], user: str, password: str) -> bool:
    expected = users.get(user)
    # compare against something even for unknown users, so timing says nothing about who exists
    return secrets.compare_digest((expected or "\x00invalid").encode(), password.encode()) and expected is not None


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class BasicAuthMiddleware:
    """Requires HTTP Basic credentials on the API and its docs; the Gradio UI has its own login."""

    def __init__(self, app: ASGIApp, users: dict[str, str]):
        self.app, self.users = app, users

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(PROTECTED_PREFIXES):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            creds = _basic_credentials(headers.get("authorization", ""))
            if creds is None or not check(self.users, *creds):
                body = json.dumps({"detail": "authentication required: use HTTP Basic with a user from SFT_UI_AUTH"})
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b'Basic realm="sft_ui"')]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)

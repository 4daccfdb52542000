"""What keeps the web app from serving or writing anything it should not.

* **Token** — when the server has one, every request (pages, API, ``/docs``) must carry it, as
  ``Authorization: Bearer TOKEN`` or as the cookie that ``/login?token=TOKEN`` sets. A server bound
  to anything but a loopback address refuses to start without one (see :func:`check_bind`).
* **Host header** — a server bound to loopback answers only requests addressed to a loopback name,
  so a web page elsewhere cannot reach it through DNS rebinding (a name that resolves to 127.0.0.1).
* **Origin** — a request that changes something and comes from a page of another origin is refused
  (cross-site request forgery against a local server with no token).
* **Body size** — a request body over the limit is cut off with 413 before it fills the disk.
* **Names and paths** — person names are validated (:func:`validate_person_name`); files are looked
  up by database id and served only if their real path lies inside the workspace
  (:func:`inside_workspace`); user-supplied file names are never used as paths.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import unicodedata
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE_NAME = "facelab_session"
# The largest id SQLite can store (a signed 64-bit integer); URLs with larger ids are refused (422).
MAX_DB_ID = 2**63 - 1
# Long enough that guessing it over HTTP is hopeless (16 characters of token_urlsafe ≈ 96 bits).
MIN_TOKEN_LENGTH = 16

# Letters and digits of any script, space, hyphen, underscore and dot; no slash or backslash, no
# leading dot or space (hidden files, "..") and no trailing dot or space (Windows drops them).
_PERSON_NAME = re.compile(r"^\w(?:[\w .-]{0,62}[\w-])?$")
MAX_PERSON_NAME = 64


class InsecureBind(ValueError):
    """The server was asked to listen beyond this machine without a (good enough) token."""


def validate_person_name(name: str) -> str:
    """The person name to use (NFC-normalised, stripped); raises ValueError saying what is wrong.

    Person names become folder names (``WS/uploads/<person>/``, ``WS/crops/<person>/``), so the
    rules are those of a safe, portable folder name.
    """
    if not isinstance(name, str):
        raise ValueError("the person's name must be text")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise ValueError("the person's name is empty")
    if len(cleaned) > MAX_PERSON_NAME:
        raise ValueError(f"the person's name is longer than {MAX_PERSON_NAME} characters")
    if not _PERSON_NAME.match(cleaned):
        raise ValueError(
            f"{cleaned!r} is not a usable person name: use letters, digits, spaces and - _ . only, "
            "not starting with a dot or ending with a dot or space (no slashes)"
        )
    return cleaned


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen on a non-loopback address without a token of at least MIN_TOKEN_LENGTH."""
    if is_loopback(host):
        if token is not None and not token:
            raise InsecureBind("--token is empty")
        return
    if not token:
        raise InsecureBind(
            f"--host {host} makes facelab reachable from other machines, so a token is required: "
            "add --token \"$(python -c 'import secrets; print(secrets.token_urlsafe(24))')\" "
            "(or set FACELAB_TOKEN), then open http://HOST:PORT/login?token=TOKEN once in the browser"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise InsecureBind(f"the token is too short: use at least {MIN_TOKEN_LENGTH} random characters")


def session_value(token: str) -> str:
    """The cookie value for ``token``: derived from it, so the token itself is not stored in the browser."""
    return hmac.new(token.encode(), b"facelab-session-v1", hashlib.sha256).hexdigest()


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def inside_workspace(root: Path, path: Path | str) -> Path | None:
    """``path`` resolved (symlinks followed) if it is an existing file inside ``root``, else None.

    Relative paths are taken relative to ``root``. Every file the server sends goes through this,
    so a database row or a symlink pointing elsewhere cannot make it serve a file from outside.
    """
    root = Path(root).resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _host_name(host_header: str) -> str:
    """The host part of a Host header (``[::1]:8000`` → ``::1``, ``localhost:8000`` → ``localhost``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# Pages load scripts and styles only from this server (no CDN: facelab works offline); images may
# be blob: URLs (a photo chosen for recognition is shown before it is uploaded).
PAGE_CSP = (
    b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    b"script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Guard:
    """ASGI middleware: host, origin, token and body-size checks, plus security headers.

    ``open_paths`` need no token (the login page, the stylesheet and scripts it uses);
    ``csp_exempt`` are pages that need inline scripts (Swagger UI at ``/docs``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        loopback_only: bool,
        max_body_bytes: int,
        open_paths: tuple[str, ...] = ("/login", "/static/", "/favicon.ico"),
        csp_exempt: tuple[str, ...] = ("/docs", "/docs-static/"),
    ) -> None:
        self.app = app
        self.token = token
        self.cookie = session_value(token) if token else None
        self.loopback_only = loopback_only
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths
        self.csp_exempt = csp_exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        problem = self._refuse(scope, path)
        if problem is not None:
            status, text, extra = problem
            await _plain_response(scope, send, status, text, path, extra)
            return
        await self.app(scope, self._limited(scope, receive), self._with_headers(path, send))

    # -- checks ---------------------------------------------------------------------------------
    def _refuse(self, scope: Scope, path: str) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host_header = _header(scope, b"host") or ""
        if self.loopback_only and not is_loopback(_host_name(host_header)):
            return (
                421,
                f"this facelab server only answers requests addressed to localhost, not {host_header!r}",
                [],
            )
        method = scope.get("method", "GET")
        origin = _header(scope, b"origin")
        # Browsers send Origin with every POST/PUT/DELETE; "null" comes from sandboxed frames and
        # file: pages, which are other origins too.
        unsafe = method not in ("GET", "HEAD", "OPTIONS")
        if (
            unsafe
            and origin is not None
            and (origin == "null" or urlsplit(origin).netloc.lower() != host_header.lower())
        ):
            return 403, f"cross-site request from {origin} refused", []
        if self.token and not path.startswith(self.open_paths) and not self._authorized(scope):
            if path.startswith("/api/") or path == "/openapi.json" or method != "GET":
                return (
                    401,
                    "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                    [(b"www-authenticate", b'Bearer realm="facelab"')],
                )
            target = quote(path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""))
            return 303, "log in first", [(b"location", f"/login?next={target}".encode("latin-1"))]
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return 413, f"request body over the limit of {self.max_body_bytes // 2**20} MiB", []
        return None

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None and self.cookie is not None
        auth = _header(scope, b"authorization") or ""
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() == "bearer" and token_matches(credentials.strip(), self.token):
            return True
        cookie = _cookie(scope, COOKIE_NAME)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.cookie.encode())

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that stops a body without Content-Length (chunked) at the limit too."""
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # HTTPException passes through FastAPI's body parsing untouched (any other
                    # error would become a generic 400), so the client learns why.
                    from fastapi import HTTPException

                    raise HTTPException(413, f"request body over the limit of {limit // 2**20} MiB")
            return message

        return wrapped

    def _with_headers(self, path: str, send: Send) -> Send:
        csp = not path.startswith(self.csp_exempt)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {key.lower() for key, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if csp and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", PAGE_CSP))
                message["headers"] = headers
            await send(message)

        return wrapped


async def _plain_response(
    scope: Scope, send: Send, status: int, text: str, path: str, extra: list[tuple[bytes, bytes]]
) -> None:
    """A refusal: JSON ``{"detail": ...}`` for the API, short text for pages."""
    import json

    if path.startswith("/api/") or path == "/openapi.json":
        body = json.dumps({"detail": text}).encode()
        content_type = b"application/json"
    else:
        body = text.encode()
        content_type = b"text/plain; charset=utf-8"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""})

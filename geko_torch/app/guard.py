"""Who may talk to the app: the Host and Origin checks, uploads, and the rules for exposing it.

The app can start processes and read the files of its workspace, so a request must come from a
page the app served, to an address the user chose:

* **Host allow-list.** A request whose ``Host`` header names another host is refused (421). That
  stops DNS rebinding: a web page on ``evil.example`` whose name later resolves to 127.0.0.1
  still sends ``Host: evil.example``.
* **Origin check.** A request that carries an ``Origin`` header (every cross-site ``fetch`` and
  form post) must come from an allowed host and port; gradio alone answers any origin with
  ``access-control-allow-origin`` when it is not bound to a loopback address.
* **No uploads.** The app has no upload control; gradio's upload route is refused outright.
* **Exposure.** A non-loopback address is refused without authentication (``--auth USER:PASS``
  or the ``GEKO_APP_TOKEN`` environment variable), and errors are then not shown in detail.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from geko_state.errors import ConfigError

__all__ = ["LOOPBACK_NAMES", "TOKEN_ENV", "TOKEN_USER", "AccessPolicy", "HostGuard", "is_loopback", "parse_auth"]

LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
TOKEN_ENV = "GEKO_APP_TOKEN"
TOKEN_USER = "geko"  # the user name that goes with GEKO_APP_TOKEN

# Routes that take files from the client. The app has no upload control, so none are served.
_UPLOAD_SUFFIXES = ("/upload", "/upload_progress")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """``name[:port]`` (IPv6 in brackets) -> (lower-case name without brackets, port or None)."""
    parts = urlsplit("//" + value.strip())
    try:
        port = parts.port
    except ValueError:
        return "", -1  # a malformed port matches nothing
    return (parts.hostname or "").lower(), port


def parse_auth(text: str | None, env: dict[str, str] | None = None) -> tuple[str, str] | None:
    """``--auth USER:PASS``, else ``GEKO_APP_TOKEN`` (user name :data:`TOKEN_USER`), else None."""
    env = os.environ if env is None else env
    if text is not None:
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"--auth: expected USER:PASS with both parts non-empty, got {text!r}")
        return user, password
    token = env.get(TOKEN_ENV, "")
    if token:
        return TOKEN_USER, token
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Where the app is served and who may reach it. Validated on construction (ConfigError)."""

    host: str
    port: int
    auth: tuple[str, str] | None = None
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)  # --allow-host NAME[:PORT]

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ConfigError("--host: expected an address to serve on")
        if not self.exposed_ok:
            raise ConfigError(
                f"--host {self.host}: serving beyond this machine needs authentication; the app starts "
                "training processes and reads the files of its workspace. Give --auth USER:PASS, or set "
                f"{TOKEN_ENV} (log in as user {TOKEN_USER!r} with it); or keep the default 127.0.0.1 and "
                "reach it through an SSH tunnel")
        for h in self.extra_hosts:
            name, port = _split_host(h)
            if not name or port == -1:
                raise ConfigError(f"--allow-host {h!r}: expected a host name or address, optionally with :PORT")

    @property
    def exposed(self) -> bool:
        return not is_loopback(self.host)

    @property
    def exposed_ok(self) -> bool:
        return not self.exposed or self.auth is not None

    @property
    def show_error(self) -> bool:
        """Detailed error messages (paths, exceptions) only for a loopback-bound app."""
        return not self.exposed

    def allowed(self) -> list[tuple[str, int | None]]:
        """(host name, port or None for any port) pairs a request may name."""
        out: list[tuple[str, int | None]] = [(n, self.port) for n in LOOPBACK_NAMES]
        bound = self.host.strip().strip("[]").lower()
        if bound not in ("0.0.0.0", "::", "") and bound not in LOOPBACK_NAMES:
            out.append((bound, self.port))
        out += [_split_host(h) for h in self.extra_hosts]
        return out

    def host_allowed(self, value: str) -> bool:
        name, port = _split_host(value)
        if not name or port == -1:
            return False
        return any(name == n and (p is None or port == p) for n, p in self.allowed())

    def origin_allowed(self, origin: str) -> bool:
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file:// pages) and anything odd
        return self.host_allowed(parts.netloc)

    def gradio_auth(self) -> Callable[[str, str], bool] | None:
        """The ``auth=`` callable for gradio (constant-time comparison), or None."""
        if self.auth is None:
            return None
        user, password = self.auth

        def check(u: str, p: str) -> bool:
            ok_user = hmac.compare_digest(str(u).encode(), user.encode())
            ok_pass = hmac.compare_digest(str(p).encode(), password.encode())
            return ok_user and ok_pass

        return check


class HostGuard:
    """ASGI middleware enforcing :class:`AccessPolicy`'s Host and Origin rules and refusing uploads."""

    def __init__(self, app: Any, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        why = self.refusal(scope, headers)
        if why is None:
            await self.app(scope, receive, send)
            return
        status, text = why
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, message) for a refused request, None for an accepted one."""
        host = headers.get("host")
        if host is None or not self.policy.host_allowed(host):
            return 421, (f"geko app: refused: Host {host!r} is not an address of this app (add it with "
                         "--allow-host NAME if you reach the app under that name)")
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_allowed(origin):
            return 403, f"geko app: refused: requests from the web page at {origin!r} are not accepted"
        path = scope.get("path", "")
        if any(path.rstrip("/").endswith(s) for s in _UPLOAD_SUFFIXES):
            return 403, "geko app: refused: this app takes no uploads"
        return None

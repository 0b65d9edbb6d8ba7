"""AccessPolicy and HostGuard without a server: which hosts, origins and logins are accepted."""
from __future__ import annotations

import asyncio

import pytest

from geko_state.errors import ConfigError
from geko_torch.app.guard import TOKEN_USER, AccessPolicy, HostGuard, is_loopback, parse_auth


def test_loopback_addresses():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org", ""):
        assert not is_loopback(host), host


def test_an_exposed_host_needs_a_login_and_hides_errors():
    with pytest.raises(ConfigError, match="needs authentication.*--auth USER:PASS.*GEKO_APP_TOKEN"):
        AccessPolicy("0.0.0.0", 7860)
    exposed = AccessPolicy("0.0.0.0", 7860, auth=("u", "p"))
    assert exposed.exposed and not exposed.show_error
    local = AccessPolicy("127.0.0.1", 7860)
    assert not local.exposed and local.show_error and local.gradio_auth() is None


def test_parse_auth_and_the_token_variable():
    assert parse_auth("alice:pa:ss", env={}) == ("alice", "pa:ss")
    assert parse_auth(None, env={"GEKO_APP_TOKEN": "tok"}) == (TOKEN_USER, "tok")
    assert parse_auth(None, env={}) is None
    for bad in ("alice", ":x", "alice:"):
        with pytest.raises(ConfigError, match="--auth"):
            parse_auth(bad, env={})
    check = AccessPolicy("127.0.0.1", 1, auth=("alice", "pw")).gradio_auth()
    assert check("alice", "pw") and not check("alice", "pW") and not check("bob", "pw")


def test_hosts_and_origins():
    p = AccessPolicy("127.0.0.1", 7860, extra_hosts=("geko.internal", "proxy.example:443"))
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST:7860", "geko.internal",
                 "geko.internal:8080", "proxy.example:443"):
        assert p.host_allowed(host), host
    for host in ("evil.example:7860", "127.0.0.1:7861", "localhost", "proxy.example:80", "",
                 "127.0.0.1.evil.example:7860", "localhost:notaport"):
        assert not p.host_allowed(host), host
    assert p.origin_allowed("http://127.0.0.1:7860") and p.origin_allowed("https://proxy.example:443")
    for origin in ("null", "http://evil.example", "http://localhost:3000", "file://", "ws://127.0.0.1:7860"):
        assert not p.origin_allowed(origin), origin
    with pytest.raises(ConfigError, match="--allow-host"):
        AccessPolicy("127.0.0.1", 1, extra_hosts=("bad:port",))


def _request(guard: HostGuard, path: str, headers: dict[str, str], method: str = "POST") -> int:
    sent: list[dict] = []
    reached: list[bool] = []

    async def inner(scope, receive, send):
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    guard.app = inner
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    assert bool(reached) == (status == 200)  # a refused request never reaches the app
    return status


def test_guard_refuses_foreign_hosts_origins_and_uploads():
    guard = HostGuard(None, AccessPolicy("127.0.0.1", 7860))
    ok = {"Host": "127.0.0.1:7860"}
    assert _request(guard, "/gradio_api/call/run_sql", ok) == 200
    assert _request(guard, "/gradio_api/call/run_sql", {**ok, "Origin": "http://127.0.0.1:7860"}) == 200
    assert _request(guard, "/gradio_api/call/run_sql", {"Host": "evil.example:7860"}) == 421
    assert _request(guard, "/", {}, method="GET") == 421  # no Host at all
    assert _request(guard, "/gradio_api/call/run_sql", {**ok, "Origin": "http://evil.example"}) == 403
    assert _request(guard, "/gradio_api/upload", ok) == 403
    assert _request(guard, "/gradio_api/upload_progress", ok, method="GET") == 403

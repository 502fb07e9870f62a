"""Browser-borne attacks over raw sockets: Host (DNS rebinding), JSON-only bodies, CORS, bind rule.

Strategy: each request is valid but for the one thing a browser-borne attacker controls (Host,
Content-Type, Origin), sent as raw bytes to the scripted app; the refusal must come in the route's
error shape before the engine sees anything. The bind rule is checked as a function and via main().
"""
from __future__ import annotations

import json

import pytest

from support.servers import KEY, serve_scripted
from support.rawhttp import exchange
from unsloth_min import cli
from unsloth_min.guard import Guard, check_bind, is_loopback
from unsloth_min.http import host_name

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = [("Content-Type", "application/json")]


def raw(method: str, path: str, headers: list, body: bytes = b"", host: str | None = "localhost"):
    lines = [f"{method} {path} HTTP/1.1"] + ([f"Host: {host}"] if host is not None else [])
    lines += [f"{n}: {v}" for n, v in headers + [("Authorization", f"Bearer {KEY}")]]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def ask(server, *args, **kw):
    return exchange(server.host, server.port, raw(*args, **kw))[0]


# --- Host -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8888", "127.0.0.1", "127.0.0.1:1",
                                  "[::1]", "[::1]:8888"])
def test_loopback_hosts_pass(scripted_server, host):
    assert ask(scripted_server, "POST", CHAT, JSON, BODY, host=host).status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8888", "127.0.0.2", "localhost.",
                                  "localhost.evil.example", "0.0.0.0", "[::2]", "192.168.1.5:8888"])
def test_other_hosts_are_403_in_the_route_shape(scripted_server, host):
    reply = ask(scripted_server, "POST", CHAT, JSON, BODY, host=host)
    assert reply.status == 403 and reply.headers["connection"] == "keep-alive"
    assert json.loads(reply.body)["error"]["type"] == "permission_error"
    reply = ask(scripted_server, "GET", "/health", [], host=host)  # no key needed, still refused
    assert reply.status == 403
    reply = ask(scripted_server, "POST", "/v1/messages", JSON, b"{}", host=host)
    assert json.loads(reply.body)["type"] == "error"  # Anthropic's shape on Anthropic's route
    assert json.loads(reply.body)["error"]["type"] == "permission_error"
    assert scripted_server.engine.history == []


def test_absolute_form_target_overrides_host(scripted_server):
    reply = ask(scripted_server, "GET", "http://evil.example:8888/health", [], host="localhost")
    assert reply.status == 403
    assert ask(scripted_server, "GET", "http://localhost:1/health", [], host="x").status == 200


@pytest.mark.parametrize("target", ["http://evil@localhost/health", "http://u:p@localhost:1/health",
                                    "http://localhost@evil.example/health"])
def test_userinfo_in_the_target_is_400_not_a_host(scripted_server, target):
    # The guard once read `evil@localhost` as host localhost while the parser kept `evil@localhost`:
    # now the parser refuses the target (RFC 9110 §4.2.4) and the guard never sees a second reading.
    reply = ask(scripted_server, "GET", target, [], host="localhost")
    assert reply.status == 400 and reply.headers["connection"] == "close"
    assert scripted_server.engine.history == []


def test_http10_without_host_passes(scripted_server):
    reply, _ = exchange(scripted_server.host, scripted_server.port, b"GET /health HTTP/1.0\r\n\r\n")
    assert reply.status == 200


def test_allowed_host_flag():
    guard = Guard.for_bind("127.0.0.1", ["MyBox.lan", "other:9000"])
    with serve_scripted(guard=guard) as server:
        for host in ("mybox.lan", "mybox.lan:1234", "other", "localhost"):
            assert ask(server, "GET", "/health", [], host=host).status == 200
        assert ask(server, "GET", "/health", [], host="evil.example").status == 403


def test_host_check_on_other_binds():
    assert not Guard.for_bind("0.0.0.0").check_host  # exposed on purpose: any name may reach it
    assert Guard.for_bind("0.0.0.0", ["box.lan"]).check_host  # unless names are given
    assert not Guard.for_bind("127.0.0.1", ["*"]).check_host
    assert Guard.for_bind("::1").check_host and Guard.for_bind("localhost").check_host


# --- Content-Type ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["application/json", "Application/JSON", "application/json;charset=utf-8",
                                   'application/json ; charset="UTF-8"', "application/json; x=1; y=\"a;b\""])
def test_json_media_types_pass(scripted_server, ctype):
    assert ask(scripted_server, "POST", CHAT, [("Content-Type", ctype)], BODY).status == 200


@pytest.mark.parametrize("headers", [
    [], [("Content-Type", "text/plain")], [("Content-Type", "text/plain;charset=utf-8")],
    [("Content-Type", "application/x-www-form-urlencoded")], [("Content-Type", "multipart/form-data")],
    [("Content-Type", "application/json-patch+json")], [("Content-Type", "application/jsonx")],
    [("Content-Type", "application/json; charset=latin-1")], [("Content-Type", "application/json;")],
    [("Content-Type", "application/json, text/plain")], [("Content-Type", "json")],
    [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
])
def test_other_bodies_are_415(scripted_server, headers):
    reply = ask(scripted_server, "POST", CHAT, headers, BODY)
    assert reply.status == 415 and json.loads(reply.body)["error"]["type"] == "invalid_request_error"
    reply = ask(scripted_server, "POST", "/v1/messages", headers, BODY)
    assert reply.status == 415 and json.loads(reply.body)["type"] == "error"
    assert scripted_server.engine.history == []


# --- CORS -----------------------------------------------------------------------------------------

def preflight(origin: str | None, asked: str = "authorization, content-type") -> list:
    headers = [("Origin", origin)] if origin else []
    return headers + [("Access-Control-Request-Method", "POST"),
                      ("Access-Control-Request-Headers", asked)]


def test_cors_off_by_default(scripted_server):
    reply = ask(scripted_server, "OPTIONS", CHAT, preflight("http://localhost:3000"))
    assert reply.status == 403 and "access-control-allow-origin" not in reply.headers
    reply = ask(scripted_server, "POST", CHAT, JSON + [("Origin", "http://localhost:3000")], BODY)
    assert reply.status == 200
    assert not any(n.startswith("access-control-") for n in reply.headers)


def test_cors_listed_origins_only():
    app_origin = "http://localhost:3000"
    with serve_scripted(guard=Guard.for_bind("127.0.0.1", cors_origins=[app_origin + "/"])) as server:
        reply = ask(server, "OPTIONS", CHAT, preflight("http://LOCALHOST:3000", "x-api-key, x-stainless-os"))
        assert reply.status == 204 and reply.body == b""
        assert reply.header_values("access-control-allow-origin") == ["http://LOCALHOST:3000"]
        assert reply.headers["access-control-allow-headers"] == "x-api-key, x-stainless-os"
        assert "POST" in reply.headers["access-control-allow-methods"]
        assert reply.headers["vary"] == "Origin" and "access-control-allow-credentials" not in reply.headers
        reply = ask(server, "POST", CHAT, JSON + [("Origin", app_origin)], BODY)
        assert reply.status == 200 and reply.headers["access-control-allow-origin"] == app_origin
        reply = ask(server, "POST", CHAT, [("Origin", app_origin)], BODY)  # errors readable too
        assert reply.status == 415 and reply.headers["access-control-allow-origin"] == app_origin
        for evil in ("http://evil.example", "http://localhost:3001", "null", None):
            reply = ask(server, "OPTIONS", CHAT, preflight(evil))
            assert reply.status == 403 and "access-control-allow-origin" not in reply.headers
            reply = ask(server, "POST", CHAT, JSON + ([("Origin", evil)] if evil else []), BODY)
            assert reply.status == 200 and "access-control-allow-origin" not in reply.headers
            assert reply.headers["vary"] == "Origin"


def test_cors_star_never_with_credentials():
    with serve_scripted(guard=Guard.for_bind("127.0.0.1", cors_origins=["*"])) as server:
        reply = ask(server, "OPTIONS", CHAT, preflight("http://evil.example", "bad header!"))
        assert reply.status == 204 and reply.headers["access-control-allow-origin"] == "*"
        assert reply.headers["access-control-allow-headers"].startswith("authorization")
        assert "access-control-allow-credentials" not in reply.headers
        reply = ask(server, "POST", CHAT, JSON + [("Origin", "http://evil.example")], BODY)
        assert reply.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in reply.headers


def test_options_without_preflight_headers_is_routed(scripted_server):
    reply = ask(scripted_server, "OPTIONS", CHAT, [])
    assert reply.status == 405 and reply.headers["allow"] == "POST"


# --- binding beyond loopback ----------------------------------------------------------------------

def test_bind_rule():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.8.9.10"):
        assert is_loopback(host)
        check_bind(host, has_key=False)
    for host in ("0.0.0.0", "::", "", "192.168.1.5", "example.com"):
        assert not is_loopback(host)
        check_bind(host, has_key=True)
        with pytest.raises(RuntimeError, match="without an API key"):
            check_bind(host, has_key=False)
    assert host_name("[::1]:80") == "[::1]" and host_name("A.b:1") == "a.b"


def test_cli_refuses_public_bind_without_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNSLOTH_MIN_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "ensure_key", lambda store, keys: None)  # as if none were minted
    monkeypatch.setattr(cli, "serve", lambda *a, **k: pytest.fail("must not serve"))
    assert cli.main(["-H", "0.0.0.0", "-p", "0"]) == 1
    assert "without an API key" in capsys.readouterr().err

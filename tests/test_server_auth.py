"""Who may talk to `orchestra serve`: loopback by default, a bearer token otherwise."""

from __future__ import annotations

import hmac
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from conftest import model_toml
from server_helpers import serve

from orchestra.cli.serve import is_loopback
from orchestra.testing import StubProvider

TOKEN = "tok-4f9a1c2e7b3d5a6f8e0c1b2a3d4e5f60"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def orchestra(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_a_non_loopback_bind_without_a_token_is_refused_in_one_line(host: str) -> None:
    done = orchestra("serve", "--host", host, env={"ORCHESTRA_TOKEN": ""})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"orchestra: error: refusing to listen on {host} without a token")
    assert "--token" in lines[0] and "ORCHESTRA_TOKEN" in lines[0]


def test_loopback_addresses_are_known() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "my-host", ""]))


def test_with_a_token_every_route_but_health_needs_it(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    with serve(write_config(model_toml("stub-cloud", stub.url)), token=TOKEN) as server:
        ok = server.client(TOKEN).chat.completions.create(model="auto", messages=FRANCE)
        assert ok.choices[0].message.content == "Paris"
        for wrong in ("wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
            with pytest.raises(openai.AuthenticationError) as caught:
                server.client(wrong).chat.completions.create(model="auto", messages=FRANCE)
            assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        with server.http() as anonymous:
            assert anonymous.get("/health").status_code == 200
            for path in ("/v1/models", "/status", "/metrics", "/v1/history", "/admin/models"):
                refused = anonymous.get(path)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"] == "Bearer"
            basic = anonymous.get("/v1/models", headers={"authorization": f"Basic {TOKEN}"})
            assert basic.status_code == 401
        with server.http(TOKEN) as http:
            assert http.get("/status").status_code == 200
            assert http.get("/admin/models").status_code == 200


def test_without_a_token_admin_routes_are_refused(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("stub-cloud", stub.url))
    with serve(config) as server, server.http("anything") as http:
        assert http.get("/v1/models").status_code == 200
        refused = http.post("/admin/models", json={})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_disabled"
        assert http.delete("/admin/models/stub-cloud").status_code == 403


def test_the_token_is_compared_in_constant_time(
    stub: StubProvider, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with serve(write_config(model_toml("stub-cloud", stub.url)), token=TOKEN) as server:
        with server.http("guess") as http:
            assert http.get("/v1/models").status_code == 401
        with server.http(TOKEN) as http:
            assert http.get("/v1/models").status_code == 200
    assert seen == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_help_imports_neither_the_server_nor_litellm() -> None:
    code = (
        "import sys, orchestra.cli.main as m\n"
        "for argv in (['--help'], ['serve', '--help']):\n"
        "    try:\n        m.main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = {'litellm', 'uvicorn', 'starlette', 'prometheus_client', 'orchestra.server'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]"), done.stdout
    assert "serve" in done.stdout and "--workers N" in done.stdout


def test_the_servers_logs_mask_keys_and_the_token() -> None:
    """uvicorn's handlers and Orchestra's loggers, in every worker, go through the redactor."""
    code = (
        "import logging, logging.config\n"
        "from orchestra.cli.serve import log_config\n"
        "logging.config.dictConfig(log_config(0))\n"
        "get = logging.getLogger\n"
        "get('orchestra.server').error('boom sk-proj-abcdefghijklmnopqrstuvwxyz012345')\n"
        f"get('uvicorn.error').error('token %s', '{TOKEN}')\n"
        "get('somelib').warning('Bearer abcdefghijklmnop0123456789')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORCHESTRA_TOKEN": TOKEN},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("***") == 3, done.stderr
    assert "sk-proj-abc" not in done.stderr and TOKEN not in done.stderr
    assert "abcdefghijklmnop0123456789" not in done.stderr


def test_a_browser_page_from_a_configured_origin_may_call_the_api(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    """CORS for `[server] cors_origins`: the preflight (no token) is answered, the call still
    needs the token, and a page from any other origin gets no permission."""
    app = "http://app.example"
    config = write_config(
        model_toml("stub-cloud", stub.url), extra=f'[server]\ncors_origins = ["{app}"]\n'
    )
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os",
    }
    with serve(config, token=TOKEN) as server, server.http() as browser:
        allowed = browser.options("/v1/chat/completions", headers={"origin": app, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == app
        assert "POST" in allowed.headers["access-control-allow-methods"]
        other = browser.options(
            "/v1/chat/completions", headers={"origin": "http://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        call = browser.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": FRANCE},
            headers={"origin": app, "authorization": f"Bearer {TOKEN}"},
        )
        assert call.status_code == 200 and call.headers["access-control-allow-origin"] == app
        tokenless = browser.post(
            "/v1/chat/completions", json={"model": "auto", "messages": FRANCE},
            headers={"origin": app},
        )  # fmt: skip
        assert tokenless.status_code == 401


def test_without_cors_origins_no_page_elsewhere_may_call_the_api(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server, server.http() as http:
        reply = http.post(
            "/v1/chat/completions", json={"model": "auto", "messages": FRANCE},
            headers={"origin": "http://app.example"},
        )  # fmt: skip
        assert reply.status_code == 200
        assert "access-control-allow-origin" not in reply.headers

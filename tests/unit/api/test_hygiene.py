"""Security headers and closed-by-default CORS, through a real uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import strategies as st

from bastion.api._hygiene import SecurityHeadersMiddleware, parse_cors_origin
from bastion.errors import InputError

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
HSTS = "max-age=63072000; includeSubDomains"
APP_ORIGIN = "https://app.example.org"


class Calls:
    count = 0


def make_app(calls: Calls) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def counting(request: object, call_next: object) -> object:
        calls.count += 1
        return await call_next(request)  # type: ignore[operator]

    @app.get("/ok")
    def ok() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/ok")
    def post_ok() -> dict[str, str]:
        return {"status": "posted"}

    @app.get("/refused")
    def refused() -> None:
        raise HTTPException(status_code=400, detail="bad")

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("a bug")

    @app.get("/own-headers")
    def own_headers() -> JSONResponse:
        return JSONResponse(
            {"page": True},
            headers={
                "Cache-Control": "max-age=60",
                "Content-Security-Policy": "default-src 'self'",
                "Access-Control-Allow-Origin": "*",
                "Vary": "Accept-Encoding",
            },
        )

    return app


@contextmanager
def serving(hsts: bool = False, cors_origins: Sequence[str] = ()) -> Iterator[tuple[str, Calls]]:
    """The middleware around a small FastAPI app on a free loopback port; base URL and calls."""
    calls = Calls()
    app = SecurityHeadersMiddleware(make_app(calls), hsts=hsts, cors_origins=cors_origins)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", calls
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def preflight(url: str, origin: str, method: str = "POST", headers: str = "") -> httpx.Response:
    request = {"origin": origin, "access-control-request-method": method}
    if headers:
        request["access-control-request-headers"] = headers
    return httpx.options(f"{url}/ok", headers=request)


def assert_secured(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers["permissions-policy"].startswith("camera=()")
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("path", "status"), [("/ok", 200), ("/nowhere", 404), ("/refused", 400)])
def test_security_headers_on_answers_and_errors(path: str, status: int) -> None:
    with serving() as (url, _calls):
        response = httpx.get(url + path)
    assert response.status_code == status
    assert_secured(response)
    assert "strict-transport-security" not in response.headers


def test_security_headers_on_an_unhandled_crash() -> None:
    with serving(hsts=True) as (url, _calls):
        response = httpx.get(f"{url}/crash")
    assert response.status_code == 500
    assert_secured(response)
    assert response.headers["strict-transport-security"] == HSTS


def test_hsts_only_when_asked() -> None:
    with serving(hsts=True) as (url, _calls):
        response = httpx.get(f"{url}/ok")
    assert response.headers.get_list("strict-transport-security") == [HSTS]


def test_headers_the_app_set_win_and_are_not_duplicated() -> None:
    with serving() as (url, _calls):
        response = httpx.get(f"{url}/own-headers")
    assert response.headers.get_list("cache-control") == ["max-age=60"]
    assert response.headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert response.headers["x-frame-options"] == "DENY"
    # CORS belongs to the middleware: the app's wildcard is dropped.
    assert "access-control-allow-origin" not in response.headers


def test_cors_is_closed_by_default() -> None:
    with serving() as (url, calls):
        refused = preflight(url, APP_ORIGIN)
        simple = httpx.get(f"{url}/ok", headers={"origin": APP_ORIGIN})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert (body["status"], body["code"], body["type"]) == (
        403,
        "forbidden",
        "urn:bastion:problem:forbidden",
    )
    assert body["title"]
    assert body["detail"]
    assert_secured(refused)
    for response in (refused, simple):
        assert not [name for name in response.headers if name.startswith("access-control-")]
    assert simple.status_code == 200
    assert calls.count == 1  # the preflight never reached the application


def test_allowed_origin_gets_a_preflight_answer_and_its_echo() -> None:
    with serving(cors_origins=[APP_ORIGIN, "http://localhost:5173"]) as (url, calls):
        answered = preflight(url, APP_ORIGIN, "PUT", "Authorization, Content-Type")
        simple = httpx.post(f"{url}/ok", headers={"origin": APP_ORIGIN})
        stranger = preflight(url, "https://evil.example.net")
        stranger_simple = httpx.get(
            f"{url}/own-headers", headers={"origin": "https://evil.example"}
        )
    assert answered.status_code == 204
    assert answered.headers["access-control-allow-origin"] == APP_ORIGIN
    assert answered.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE"
    assert answered.headers["access-control-allow-headers"] == (
        "authorization, content-type, x-csrf-token, x-request-id"
    )
    assert answered.headers["access-control-max-age"] == "600"
    assert answered.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in answered.headers
    assert simple.status_code == 200
    assert simple.headers.get_list("access-control-allow-origin") == [APP_ORIGIN]
    assert simple.headers["vary"] == "Origin"
    assert stranger.status_code == 403
    assert "access-control-allow-origin" not in stranger.headers
    assert "access-control-allow-origin" not in stranger_simple.headers
    assert stranger_simple.headers["vary"] == "Accept-Encoding, Origin"
    assert calls.count == 2  # the two simple requests only


@pytest.mark.parametrize(
    ("method", "headers"), [("PATCH", ""), ("POST", "x-evil"), ("GET", "authorization, cookie")]
)
def test_preflight_for_methods_or_headers_the_api_does_not_take_is_refused(
    method: str, headers: str
) -> None:
    with serving(cors_origins=[APP_ORIGIN]) as (url, calls):
        response = preflight(url, APP_ORIGIN, method, headers)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert calls.count == 0


def test_two_origin_headers_are_not_an_allowed_origin() -> None:
    with serving(cors_origins=[APP_ORIGIN]) as (url, _calls):
        response = httpx.get(f"{url}/ok", headers=[("origin", APP_ORIGIN), ("origin", APP_ORIGIN)])
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        " * ",
        "null",
        "",
        "app.example.org",
        "http://app.example.org",
        "https://app.example.org/",
        "https://app.example.org/path",
        "https://app.example.org?x=1",
        "https://app.example.org#frag",
        "https://user:pw@app.example.org",
        "https://*.example.org",
        "https://app.example.org:0",
        "https://app.example.org:99999",
        "https://app.example.org:",
        "ftp://app.example.org",
        "https://bücher.example",
        "https://-bad.example.org",
        "http://10.0.0.1",
    ],
)
def test_bad_origins_are_refused_at_construction(origin: str) -> None:
    with pytest.raises(InputError):
        SecurityHeadersMiddleware(make_app(Calls()), hsts=False, cors_origins=[origin])


def test_origins_must_be_a_list_not_one_string() -> None:
    with pytest.raises(InputError, match="list"):
        SecurityHeadersMiddleware(make_app(Calls()), hsts=False, cors_origins=APP_ORIGIN)


@pytest.mark.parametrize(
    ("given_origin", "serialized"),
    [
        ("https://App.Example.ORG", "https://app.example.org"),
        ("https://app.example.org:443", "https://app.example.org"),
        ("https://app.example.org:8443", "https://app.example.org:8443"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://127.0.0.1", "http://127.0.0.1"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://[2001:db8::1]", "https://[2001:db8::1]"),
    ],
)
def test_origins_are_kept_as_browsers_send_them(given_origin: str, serialized: str) -> None:
    assert parse_cors_origin(given_origin) == serialized


@given(st.text(max_size=120))
def test_origin_parser_accepts_or_refuses_clearly(text: str) -> None:
    try:
        parsed = parse_cors_origin(text)
    except InputError:
        return  # refused with a Bastion error, nothing else
    assert parsed.startswith(("https://", "http://"))
    assert parse_cors_origin(parsed) == parsed


@given(
    host=st.from_regex(
        r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){1,3}", fullmatch=True
    ),
    port=st.integers(min_value=1, max_value=65535),
)
def test_every_https_host_and_port_is_an_origin(host: str, port: int) -> None:
    expected = f"https://{host}" if port == 443 else f"https://{host}:{port}"
    assert parse_cors_origin(f"https://{host}:{port}") == expected

"""The providers' HTTP client (app.runtime.provider_http): failures told apart as httpx tells
them, and no request sent twice."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.runtime import provider_http
from app.settings import Settings

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def settings() -> Settings:
    return Settings(_env_file=None, provider_timeout_s=5)


async def test_a_refused_connection_is_a_connect_error_not_a_timeout():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with provider_http(settings()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/x")


async def test_a_get_on_a_dropped_connection_fails_once_and_is_not_resent():
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first request is answered on a kept-alive connection; the next one is read and
        # then the connection is dropped without an answer.
        nonlocal requests
        while await reader.readuntil(b"\r\n\r\n"):
            requests += 1
            if requests > 1:
                break
            writer.write(OK)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
    try:
        async with provider_http(settings()) as http:
            assert (await http.get(url)).json() == {}
            with pytest.raises(httpx.TransportError) as raised:
                await http.get(url)
            assert not isinstance(raised.value, httpx.TimeoutException)
        assert requests == 2
    finally:
        server.close()


async def test_a_cookie_one_answer_sets_is_never_sent_with_another_call():
    # One client calls every client's provider accounts on the same hosts: what one account's
    # answer sets must not ride along with another's calls.
    cookie_headers: list[bytes | None] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            lines = head.split(b"\r\n")
            cookie = [line for line in lines if line.lower().startswith(b"cookie:")]
            cookie_headers.append(cookie[0] if cookie else None)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Set-Cookie: session=account-a; Path=/\r\nContent-Length: 2\r\n\r\n{}"
            )
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    # By name: aiohttp's own cookie jar takes no cookie from an IP address.
    url = f"http://localhost:{server.sockets[0].getsockname()[1]}/x"
    try:
        async with provider_http(settings()) as http:
            first = await http.get(url)
            assert first.headers["set-cookie"].startswith("session=")
            await http.get(url)
            assert not http.cookies
            # Nor does the store keep one set by hand: it is shared by every provider client.
            http.cookies.set("session", "by-hand")
            http.cookies.update({"other": "by-hand"})
            assert not http.cookies
            assert not provider_http(settings()).cookies
        assert cookie_headers == [None, None]
    finally:
        server.close()

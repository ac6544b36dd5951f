"""
Opening upstream connections: HTTPS trusted through SSL_CERT_FILE, and HTTP proxies
from the environment, against fake upstreams and a fake proxy on loopback.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest
import trustme

from rhetor._errors import ProviderUnavailable, UpstreamConnectionError
from rhetor._types import ChatMessage, ProviderRequest, StreamEnd, TextDelta, Usage
from rhetor.providers._anthropic import AnthropicBackend
from rhetor.providers._connect import ConnectFailed, Origin, proxy_for, trust_store
from rhetor.providers._http import HttpClient
from rhetor.providers._ollama import OllamaBackend
from rhetor.providers._openai import OpenAIBackend
from tests.fakes import Reply
from tests.fakes.anthropic import fake_anthropic
from tests.fakes.openai import fake_openai
from tests.fakes.proxy import fake_proxy

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy and no trust-store variables but what a test sets."""
    for name in (*PROXY_VARIABLES, "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def ask(model: str = "gpt-4o-mini") -> ProviderRequest:
    return ProviderRequest(model, (ChatMessage("user", "Hi"),), timeout=5.0)


async def test_https_upstream_is_trusted_through_ssl_cert_file(
    environment: pytest.MonkeyPatch, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    """A self-signed upstream over TLS answers, whole and streamed, when SSL_CERT_FILE names its CA."""
    environment.setenv("SSL_CERT_FILE", ca_file)
    async with fake_openai(tls=server_tls) as fake:
        assert fake.base_url.startswith("https://127.0.0.1:")
        fake.script(Reply("secure", input_tokens=3, output_tokens=1), Reply(chunks=("a", "b")))
        backend = OpenAIBackend("sk-test", fake.base_url)
        try:
            reply = await backend.complete(ask())
            async with aclosing(backend.stream(ask())) as items:
                streamed = [item async for item in items]
        finally:
            await backend.aclose()
    assert (reply.text, reply.usage) == ("secure", Usage(3, 1))
    assert streamed[:2] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(streamed[-1], StreamEnd)


async def test_https_upstream_not_in_the_trust_store_is_a_connection_error(
    environment: pytest.MonkeyPatch, server_tls: ssl.SSLContext
) -> None:
    """Without its CA in the trust store, a self-signed upstream fails its handshake: no request is sent."""
    async with fake_openai(tls=server_tls) as fake:
        backend = OpenAIBackend("sk-test", fake.base_url)
        try:
            with pytest.raises(UpstreamConnectionError, match="certificate verify failed"):
                await backend.complete(ask())
            status = await backend.check()
        finally:
            await backend.aclose()
        assert fake.requests == []
    assert not status.available


def test_trust_store_reads_ssl_cert_file(ca: trustme.CA, ca_file: str) -> None:
    """SSL_CERT_FILE, when set, is the whole trust store; otherwise the system's is used."""
    context = trust_store({"SSL_CERT_FILE": ca_file})
    [certificate] = context.get_ca_certs()
    assert certificate["subject"] == certificate["issuer"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert trust_store({}).verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("environ", "host", "expected"),
    [
        ({}, "api.openai.com", None),
        ({"https_proxy": "http://proxy:3128"}, "api.openai.com", "proxy:3128"),
        ({"HTTPS_PROXY": "proxy:8080"}, "api.openai.com", "proxy:8080"),
        ({"all_proxy": "http://proxy"}, "api.openai.com", "proxy"),
        ({"https_proxy": "http://p:1", "no_proxy": "openai.com"}, "api.openai.com", None),
        ({"https_proxy": "http://p:1", "no_proxy": ".openai.com:443"}, "api.openai.com", None),
        ({"https_proxy": "http://p:1", "NO_PROXY": "*"}, "api.openai.com", None),
        ({"https_proxy": "http://p:1", "no_proxy": "notopenai.com"}, "api.openai.com", "p:1"),
        ({"https_proxy": "http://p:1", "no_proxy": "127.0.0.1,localhost"}, "127.0.0.1", None),
    ],
)
def test_proxy_for_reads_the_environment(
    environ: dict[str, str], host: str, expected: str | None
) -> None:
    """HTTPS_PROXY/ALL_PROXY name the proxy (either case); NO_PROXY names hosts and domains that skip it."""
    proxy = proxy_for(Origin("https", host, 443), environ)
    assert (proxy.origin.authority if proxy else None) == expected


def test_proxy_credentials_become_proxy_authorization() -> None:
    """A proxy URL's user and password become a Basic Proxy-Authorization, percent-decoded."""
    proxy = proxy_for(Origin("http", "h", 80), {"http_proxy": "http://me:p%40ss@proxy:3128"})
    assert proxy is not None and proxy.authorization is not None
    assert base64.b64decode(proxy.authorization.removeprefix("Basic ")) == b"me:p@ss"
    assert "p@ss" not in repr(proxy)


def test_a_socks_proxy_is_refused_by_name() -> None:
    """A proxy that is not http:// is refused, naming its scheme (and every call says so)."""
    with pytest.raises(ValueError, match="socks5://"):
        proxy_for(Origin("https", "h", 443), {"https_proxy": "socks5://p:1080"})


async def test_a_client_with_an_unsupported_proxy_fails_each_call_saying_why(
    environment: pytest.MonkeyPatch,
) -> None:
    """An unsupported proxy in the environment fails each call with ConnectFailed, not the client's start."""
    environment.setenv("https_proxy", "socks5://127.0.0.1:1")
    client = HttpClient("https://api.example.com")
    with pytest.raises(ConnectFailed, match="only http:// proxies"):
        await client.request("GET", "/", ())
    await client.aclose()


async def test_plain_requests_go_through_an_http_proxy_in_absolute_form(
    environment: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, a plain-HTTP upstream is reached through the proxy, which gets the credentials."""
    credentials = "Basic " + base64.b64encode(b"me:secret").decode()
    async with fake_proxy(credentials) as proxy, fake_openai() as fake:
        environment.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://me:secret@"))
        backend = OpenAIBackend("sk-test", fake.base_url)
        try:
            assert (await backend.complete(ask())).text == Reply().joined
            assert (await backend.complete(ask())).text == Reply().joined
        finally:
            await backend.aclose()
        assert len(fake.completions) == 2
        assert "proxy-authorization" not in fake.completions[0].headers
    assert proxy.asked[0] == ("POST", f"{fake.base_url}/chat/completions", credentials)


async def test_https_goes_through_a_connect_tunnel(
    environment: pytest.MonkeyPatch, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    """With HTTPS_PROXY set, TLS runs through the proxy's CONNECT tunnel to the upstream."""
    environment.setenv("SSL_CERT_FILE", ca_file)
    async with fake_proxy() as proxy, fake_anthropic(tls=server_tls) as fake:
        environment.setenv("HTTPS_PROXY", proxy.url)
        backend = AnthropicBackend("sk-ant-test", fake.base_url)
        try:
            reply = await backend.complete(ask("claude-haiku-5-5"))
        finally:
            await backend.aclose()
        authority = fake.base_url.removeprefix("https://")
    assert reply.text == Reply().joined
    assert proxy.asked == [("CONNECT", authority, None)]


async def test_a_proxy_refusing_the_tunnel_is_a_connection_error(
    environment: pytest.MonkeyPatch, server_tls: ssl.SSLContext
) -> None:
    """A proxy that answers CONNECT with 407 fails the call as a connection error naming the proxy's answer."""
    async with fake_proxy("Basic expected") as proxy, fake_openai(tls=server_tls) as fake:
        environment.setenv("HTTPS_PROXY", proxy.url)
        backend = OpenAIBackend("sk-test", fake.base_url)
        try:
            with pytest.raises(UpstreamConnectionError, match=r"refused a tunnel.*407"):
                await backend.complete(ask())
        finally:
            await backend.aclose()


@pytest.mark.parametrize(
    ("make", "variable"),
    [
        (lambda: OpenAIBackend("sk-test", "localhost:8000/v1"), "OPENAI_BASE_URL"),
        (lambda: AnthropicBackend("sk-ant-test", "ftp://example.com"), "ANTHROPIC_BASE_URL"),
        (lambda: OllamaBackend("11434"), "OLLAMA_BASE_URL"),
    ],
    ids=["openai", "anthropic", "ollama"],
)
async def test_a_base_url_that_is_not_http_leaves_the_provider_unavailable_saying_why(
    make: Callable[[], OpenAIBackend | AnthropicBackend | OllamaBackend], variable: str
) -> None:
    """A base URL without http(s):// is no crash: the provider reports itself unavailable, naming it."""
    backend = make()
    status = await backend.check()
    assert not status.available and status.reason.startswith(f"{variable} is not usable")
    with pytest.raises(ProviderUnavailable, match=variable):
        await backend.complete(ask())
    with pytest.raises(ProviderUnavailable, match=variable):
        async with aclosing(backend.stream(ask())) as items:
            await anext(items)
    await backend.aclose()

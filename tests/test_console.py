"""Tests for the web console's serving (rhetor/edge/_ui.py) and its files, over real HTTP."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rhetor.edge._ui import SECURITY_HEADERS, console_files
from tests.helpers import ServerInfo, running_server, settings_for

REPO = Path(__file__).resolve().parent.parent
UI = REPO / "rhetor" / "edge" / "ui"
CLIENT_SRC = REPO / "clients" / "js" / "src"
CLIENT_COPY = UI / "tekton-llm-client"
KEY = "console-test-key"


@asynccontextmanager
async def served(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[ServerInfo, httpx.AsyncClient]]:
    async with (
        running_server(settings_for(tmp_path, **overrides)) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=5, verify=False) as client,
    ):
        yield server, client


async def raw_get(port: int, target: str) -> bytes:
    """A GET of ``target`` exactly as written (no client normalises its dots); the whole answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        received = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            head = received.partition(b"\r\n\r\n")[0].lower()
            declared = re.search(rb"content-length: *(\d+)", head)
            assert declared is not None, received
            length = int(declared.group(1))
            while len(received) < len(head) + 4 + length:
                received += await stream.receive_some(65536)
    return received


def test_the_console_client_is_the_same_code_as_clients_js_src() -> None:
    """rhetor/edge/ui/tekton-llm-client holds exactly clients/js/src's files, byte for byte."""
    source = {p.name: p.read_bytes() for p in CLIENT_SRC.glob("*.js")}
    copy = {p.name: p.read_bytes() for p in CLIENT_COPY.iterdir()}
    assert source, "clients/js/src has no files"
    stale = sorted(
        name for name in source.keys() | copy.keys() if source.get(name) != copy.get(name)
    )
    assert not stale, (
        f"the console's copy of the JavaScript client differs in {stale}; after changing "
        "clients/js/src, run: rm -r rhetor/edge/ui/tekton-llm-client && "
        "cp -r clients/js/src rhetor/edge/ui/tekton-llm-client"
    )


def test_every_console_file_is_package_data() -> None:
    """Each file under rhetor/edge/ui matches a package-data pattern, so wheels ship the console."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["rhetor"]
    # setuptools expands the patterns as glob does, with ** for any depth.
    shipped = {p for pattern in patterns for p in (REPO / "rhetor").glob(pattern) if p.is_file()}
    files = {p for p in UI.rglob("*") if p.is_file()}
    assert files and not files - shipped


def test_console_serves_every_file_it_ships_and_only_those() -> None:
    """The served set is the files under rhetor/edge/ui (no dot or underscore files), read once."""
    files = console_files()
    on_disk = {
        p.relative_to(UI).as_posix()
        for p in UI.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(UI).parts)
    }
    assert set(files) == on_disk
    assert console_files() is files


def test_every_module_the_console_imports_is_served() -> None:
    """Each relative import in the console's JavaScript names a file the console serves."""
    files = console_files()
    for name in files:
        if not name.endswith(".js"):
            continue
        base = Path(name).parent
        for target in re.findall(
            r"""^\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'""", files[name].body.decode(), re.M
        ):
            resolved = (base / target).as_posix()
            parts: list[str] = []
            for part in resolved.split("/"):
                if part == "..":
                    parts.pop()
                elif part != ".":
                    parts.append(part)
            assert "/".join(parts) in files, f"{name} imports {target}, which is not served"


async def test_ui_redirects_to_the_page_with_a_trailing_slash(tmp_path: Path) -> None:
    """GET /ui answers 308 to /ui/, where the page's relative imports resolve."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/ui")
    assert response.status_code == 308
    assert response.headers["Location"] == "/ui/"


async def test_page_and_modules_are_served_with_their_types_and_security_headers(
    tmp_path: Path,
) -> None:
    """/ui/ is index.html and each module is JavaScript, with the CSP, no framing and nosniff."""
    async with served(tmp_path) as (_, client):
        page = await client.get("/ui/")
        module = await client.get("/ui/tekton-llm-client/client.js")
        style = await client.get("/ui/console.css")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="app.js">' in page.content
    assert module.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert module.content == (CLIENT_SRC / "client.js").read_bytes()
    assert style.headers["Content-Type"] == "text/css; charset=utf-8"
    for response in (page, module, style):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_an_unchanged_file_answers_304_to_its_etag(tmp_path: Path) -> None:
    """A browser revalidating with If-None-Match gets 304 and no body; a stale tag gets the file."""
    async with served(tmp_path) as (_, client):
        first = await client.get("/ui/app.js")
        again = await client.get("/ui/app.js", headers={"If-None-Match": first.headers["ETag"]})
        stale = await client.get("/ui/app.js", headers={"If-None-Match": '"stale"'})
    assert again.status_code == 304 and again.content == b""
    assert stale.status_code == 200 and stale.content == first.content


async def test_a_path_naming_no_console_file_is_a_typed_404(tmp_path: Path) -> None:
    """Unknown files, directories and dot segments answer the usual not_found JSON."""
    async with served(tmp_path) as (server, client):
        missing = await client.get("/ui/nope.js")
        directory = await client.get("/ui/views")
        dots = await raw_get(server.port, "/ui/../rhetor/_settings.py")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    assert directory.status_code == 404
    assert dots.startswith(b"HTTP/1.1 404")
    assert b"not_found" in dots and b"api_key" not in dots


async def test_with_an_api_key_the_console_loads_without_it_and_the_api_still_needs_it(
    tmp_path: Path,
) -> None:
    """The static files are open (the page must load to ask for the key); the API is not."""
    async with served(tmp_path, api_key=KEY) as (_, client):
        redirect = await client.get("/ui")
        page = await client.get("/ui/")
        module = await client.get("/ui/app.js")
        providers = await client.get("/providers")
        keyed = await client.get("/providers", headers={"X-API-Key": KEY})
        lookalike = await client.get("/uix")
    assert redirect.status_code == 308
    assert page.status_code == 200 and module.status_code == 200
    assert providers.status_code == 401
    assert providers.json()["error"]["type"] == "unauthorized"
    assert keyed.status_code == 200
    assert lookalike.status_code == 401


async def test_dot_segments_under_ui_do_not_reach_the_api_without_the_key(tmp_path: Path) -> None:
    """/ui/../providers, plain or percent-encoded, is a console path (404), never the API unkeyed."""
    async with served(tmp_path, api_key=KEY) as (server, _):
        answers = [
            await raw_get(server.port, target)
            for target in (
                "/ui/../providers",
                "/ui/%2e%2e/providers",
                "/ui/..%2fproviders",
                "/ui/%2E%2E%2Fbudget",
            )
        ]
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert b"active_provider" not in answer and b"periods" not in answer


async def test_a_foreign_host_cannot_load_the_console(tmp_path: Path) -> None:
    """DNS rebinding: /ui/ under another host name is 403, like every other path."""
    async with served(tmp_path) as (_, client):
        response = await client.get("/ui/", headers={"Host": "evil.example"})
    assert response.status_code == 403
    assert response.json()["error"]["field"] == "Host"


async def test_console_paths_take_no_state_changes(tmp_path: Path) -> None:
    """A POST to the console is 405: it serves files, it changes nothing."""
    async with served(tmp_path) as (_, client):
        response = await client.post("/ui/app.js", json={})
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "method_not_allowed"


async def test_root_lists_the_console_routes(tmp_path: Path) -> None:
    """GET / names the console's routes beside the API's."""
    async with served(tmp_path) as (_, client):
        endpoints = (await client.get("/")).json()["endpoints"]
    assert "GET /ui/" in endpoints


@pytest.mark.parametrize("name", ["index.html", "app.js", "console.css", "icon.svg"])
def test_console_entry_files_exist(name: str) -> None:
    """The page, its entry module, its stylesheet and its icon are all in the package."""
    assert name in console_files()

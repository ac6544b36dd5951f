"""
The web console: the static files under ``rhetor/edge/ui`` served at ``/ui``.

The console is plain ES modules with no build step (see ``docs/console.md``):
what is in the package is what the browser runs, the JavaScript client
included (``ui/tekton-llm-client/``, a copy of ``clients/js/src`` that
``tests/test_console.py`` keeps identical). The files are read once, when the
first app is made, and served from memory: only the files the package ships
can be answered, whatever a path says, and nothing touches the disk per
request.

The pages are same-origin with the API, so they need no CORS; their
``Content-Security-Policy`` lets them load and connect to this origin alone
and forbids framing (a framed console could be clicked into changing the
provider or a budget). The static files hold no data, so they are served
without the API key (``rhetor.edge._checks.OPEN_PREFIXES``): the page must
load before it can ask for the key, and every call it then makes needs it.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from importlib.resources.abc import Traversable

import attrs
from quart import Blueprint, Response, request

from rhetor._errors import NotFound
from rhetor.edge._schema import operation

__all__ = ["SECURITY_HEADERS", "UI_PATH", "ConsoleFile", "console_blueprint", "console_files"]

UI_PATH = "/ui"

# By suffix; the console ships no other kinds of file.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

SECURITY_HEADERS = {
    # 'self' covers the same origin's ws:// too (CSP Level 3), which the client's WebSocket needs.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The page's URL never travels to another site.
    "Referrer-Policy": "no-referrer",
}


@attrs.frozen
class ConsoleFile:
    """One static file of the console, as it is served."""

    body: bytes
    content_type: str
    etag: str


def _walk(root: Traversable, prefix: str = "") -> dict[str, ConsoleFile]:
    files: dict[str, ConsoleFile] = {}
    for entry in root.iterdir():
        name = entry.name
        if name.startswith((".", "_")):
            continue  # editor files, __pycache__: not the console's
        if entry.is_dir():
            files.update(_walk(entry, f"{prefix}{name}/"))
            continue
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = _CONTENT_TYPES.get(suffix)
        if content_type is None:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[prefix + name] = ConsoleFile(body, content_type, etag)
    return files


@functools.cache
def console_files() -> dict[str, ConsoleFile]:
    """
    Every file the console serves, by its path under ``/ui/`` (read once per process).

    Error handling: a package without ``index.html`` is broken, and raises
    ``RuntimeError`` when the app is made rather than at the first visit.
    """
    files = _walk(resources.files("rhetor.edge").joinpath("ui"))
    if "index.html" not in files:
        raise RuntimeError("the console's files are missing from the package (rhetor/edge/ui)")
    return files


def _answer(file: ConsoleFile) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": file.etag, "Cache-Control": "no-cache"}
    if file.etag in request.headers.get("If-None-Match", ""):
        return Response(b"", status=304, headers=headers)
    return Response(file.body, status=200, content_type=file.content_type, headers=headers)


def console_blueprint() -> Blueprint:
    """
    The blueprint serving the console: ``/ui`` redirects to ``/ui/``, which is the page.

    Error handling: a path naming no file of the console is the app's usual
    ``not_found`` JSON error.
    """
    files = console_files()
    blueprint = Blueprint("console", __name__)

    @blueprint.get(UI_PATH)
    @operation(status=308, content_type="")
    async def console_root() -> Response:
        """
        Redirects to the console's page, ``/ui/``.
        """
        # The page's modules are imported relative to it, so it must be at /ui/.
        return Response(b"", status=308, headers={"Location": f"{UI_PATH}/"})

    @blueprint.get(f"{UI_PATH}/")
    @operation(content_type="text/html")
    async def console_page() -> Response:
        """
        The web console (see docs/console.md).
        """
        return _answer(files["index.html"])

    @blueprint.get(f"{UI_PATH}/<path:name>")
    @operation(content_type="*/*")
    async def console_file(name: str) -> Response:
        """
        One of the console's static files: modules, styles, icons.
        """
        file = files.get(name)
        if file is None:
            raise NotFound("console file", name)
        return _answer(file)

    return blueprint

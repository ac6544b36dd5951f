"""
A lean upstream for the benchmarks: canned OpenAI chat completions at once, keep-alive.

Run: ``python benchmarks/_upstream.py [--port N] [--nginx]``; it prints ``serving at
http://127.0.0.1:PORT/v1`` and answers every POST with one fixed
``chat.completion`` (and every GET with a models listing). It parses only what
keep-alive needs (the end of the head and ``content-length``), so that its cost
per request is a small part of what the gateways under test spend. It is no
fake for tests (``tests/fakes/`` speak the wire formats in full).

With ``--nginx`` (``apt-get install nginx-light``), an nginx answers the same
bytes instead, as in the issue's own measurements: one nginx process, no
access log, keep-alive without a request limit. On this 2-core machine the
Python upstream costs 300-400 us of CPU per call at one connection (mostly
trio's wake-ups), on the relay's critical path; nginx costs a tenth of that.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import socket
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import trio
from _servers import free_port  # benchmarks/_servers.py, beside this script

__all__ = ["COMPLETION", "serve"]

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the bench.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    "system_fingerprint": None,
}
MODELS = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "b"}]}

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def _response(body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\nserver: bench\r\n\r\n"
    )
    return head.encode() + data


async def _connection(post: bytes, get: bytes, stream: trio.SocketStream) -> None:
    buffer = bytearray()
    try:
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
                end = buffer.find(b"\r\n\r\n")
            head = bytes(buffer[: end + 2])
            match = _LENGTH.search(head)
            total = end + 4 + (int(match.group(1)) if match else 0)
            while len(buffer) < total:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            del buffer[:total]
            await stream.send_all(post if head.startswith(b"POST") else get)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve(
    port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """
    Serve canned replies on ``127.0.0.1:port`` until cancelled; starts with the bound port.
    """
    handler = partial(_connection, _response(COMPLETION), _response(MODELS))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.sleep(math.inf)


_NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{
            if ($request_method = POST) {{ return 200 '{post}'; }}
            return 200 '{get}';
        }}
    }}
}}
"""


def run_nginx(port: int) -> None:
    """Serve the same canned replies from nginx (in the foreground) until SIGTERM."""
    port = port or free_port()
    with tempfile.TemporaryDirectory() as where:
        conf = Path(where) / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                dir=where, port=port, post=json.dumps(COMPLETION), get=json.dumps(MODELS)
            )
        )
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", where])
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    log = (Path(where) / "error.log").read_text()
                    raise SystemExit(f"nginx did not start: {log}") from exc
                time.sleep(0.05)
        print(f"serving at http://127.0.0.1:{port}/v1", flush=True)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--nginx", action="store_true", help="answer from nginx instead")
    args = parser.parse_args()
    if args.nginx:
        run_nginx(args.port)
        return

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve, args.port))
            print(f"serving at http://127.0.0.1:{port}/v1", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()

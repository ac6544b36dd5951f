"""
A lean upstream for the benchmarks: canned OpenAI chat completions at once, keep-alive.

Run: ``python benchmarks/_upstream.py [--port N]``; it prints ``serving at
http://127.0.0.1:PORT/v1`` and answers every POST with one fixed
``chat.completion`` (and every GET with a models listing). It parses only what
keep-alive needs (the end of the head and ``content-length``), so that its cost
per request is a small part of what the gateways under test spend: an nginx
answering a fixed file does the same job in the issue's measurements. It is no
fake for tests (``tests/fakes/`` speak the wire formats in full).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from functools import partial

import trio

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve, args.port))
            print(f"serving at http://127.0.0.1:{port}/v1", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()

"""
What the edge does for every request to make it seen: an id, headers, a log line, metrics, a span.

:class:`Observer` is one per app (``EdgeState.observer``). For an HTTP
request, :meth:`Observer.serve_http` is the step of ``asgi_app`` that opens
the request's :class:`~rhetor.observe.Observation` (its id: the client's
``X-Request-ID`` when it is a safe one, else a new one), binds it to the
serving task, adds ``X-Request-ID`` and ``Server-Timing`` to the response
head, and when the app is done writes the access-log line, the metrics and
the span. A client that goes away before its reply starts is a 499 with
the error type ``cancelled``, not a 500. A WebSocket request (one ``LLM_REQUEST``, ``CHAT_REQUEST`` or
``STATUS`` frame) gets its own observation from the Session
(:meth:`Observer.begin` and :meth:`Observer.finish`).

No blueprint is imported here; ``_app``, ``_core``, ``_sockets`` and
``_session`` use it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable

from rhetor import observe
from rhetor.edge._hypercorn import WHOLE_REPLY, receive_nowait
from rhetor.observe import Observation

__all__ = ["UNMATCHED", "Observer", "request_id_of", "server_timing"]

log = logging.getLogger("rhetor.edge")

# The route of a request no rule matched (a 404), so that paths never become labels.
UNMATCHED = "(unmatched)"
_HEADER = observe.REQUEST_ID_HEADER.lower().encode()
# Seconds between two samplings of the actors' state into the gauges.
SAMPLE_INTERVAL = 5.0
# The ASGI messages that carry a reply's status and head.
_REPLY_STARTS = frozenset({"http.response.start", WHOLE_REPLY})


def request_id_of(headers: Any) -> str:
    """The request id for raw ASGI ``headers``: the client's ``X-Request-ID`` if safe, else a new one."""
    for name, value in headers:
        if name.lower() == _HEADER:
            valid = observe.valid_request_id(value)
            if valid is not None:
                return valid
            break
    return observe.fresh_request_id()


def server_timing(observation: Observation, now: float) -> str:
    """The ``Server-Timing`` value: Rhetor's overhead and the upstream time so far, in ms."""
    upstream = observation.upstream_so_far(now)
    overhead = max(0.0, now - observation.started - upstream)
    return f'rhetor;desc="overhead";dur={overhead * 1000:.3f}, upstream;dur={upstream * 1000:.3f}'


class Observer:
    """
    Opens, binds and closes the observations of one app's requests; owns its metrics.

    With ``metrics`` False (``RHETOR_METRICS=0``) nothing is recorded in them
    and ``/metrics`` answers 404; ids, headers, the log and spans stay.
    """

    def __init__(self, *, metrics: bool = True) -> None:
        self.metrics = observe.Metrics()
        self.recording = metrics

    # -- any request -------------------------------------------------------------------

    def begin(
        self,
        method: str,
        route: str,
        request_id: str,
        *,
        path: str = "",
        client: str | None = None,
        socket: str | None = None,
    ) -> Observation:
        """A new observation, its span opened when tracing is on (not bound: see :func:`observe.bind`)."""
        observation = Observation(
            request_id, method, route, path=path, client=client, socket=socket
        )
        if observe.tracing_enabled():
            observe.start_request_span(observation)
        return observation

    def finish(self, observation: Observation) -> None:
        """The request is over: its access-log line, its metrics, its span."""
        observation.ended = time.perf_counter()
        if observation.status == 0:
            observation.status = 500
        try:
            observe.access_line(observation)
            if self.recording:
                self.metrics.record(observation)
        except Exception:  # a bug here must not fail a request already answered
            log.exception("could not record request %s", observation.request_id)
        if observation.span is not None:
            observe.end_request_span(observation)

    # -- HTTP ----------------------------------------------------------------------------

    async def serve_http(
        self,
        app: ASGIFramework,
        scope: Any,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        """Serve one HTTP request with ``app``, observed (see the module's docstring)."""
        client = scope.get("client")
        observation = self.begin(
            scope["method"],
            UNMATCHED,
            request_id_of(scope["headers"]),
            path=scope["path"],
            client=client[0] if client else None,
        )
        observe.bind(observation)
        request_id = observation.request_id.encode()

        async def observed_send(message: Any) -> None:
            if message["type"] in _REPLY_STARTS:
                observation.status = message["status"]
                timing = server_timing(observation, time.perf_counter())
                headers = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id),
                    (b"server-timing", timing.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        observed_receive = _ObservedReceive(receive, observation)
        in_flight = self.metrics.in_flight if self.recording else None
        if in_flight is not None:
            in_flight.inc()
        try:
            await app(scope, observed_receive, observed_send)
        except BaseException as exc:
            observation.failed(exc)
            raise
        finally:
            if in_flight is not None:
                in_flight.dec()
            self.finish(observation)
            observe.bind(None)

    # -- the actors' state, sampled --------------------------------------------------------

    async def sample(self, runtime: Any) -> None:
        """
        Set the gauges from the actors: providers, budget, mailboxes and restarts.

        Error handling: an actor that does not answer leaves its gauges as
        they were (logged at debug); nothing is raised.
        """
        refs = [
            runtime.router,
            runtime.budget_keeper,
            runtime.contexts,
            runtime.prompts,
            *runtime.providers_refs.values(),
        ]
        providers: dict[str, bool] | None = None
        budget: Any = None
        try:
            with trio.move_on_after(2.0):
                info = await runtime.providers()
                providers = {n: p["available"] for n, p in info["providers"].items()}
                budget = await runtime.budget()
        except Exception as exc:
            log.debug("could not sample the actors' state: %s", exc)
        self.metrics.sample(providers=providers, budget=budget, actors=[r.stats() for r in refs])

    async def sample_forever(self, runtime: Any, interval: float = SAMPLE_INTERVAL) -> None:
        """Sample every ``interval`` seconds, so that every worker's gauges stay current."""
        if not self.recording:
            return
        while True:
            await self.sample(runtime)
            await trio.sleep(interval)


class _ObservedReceive:
    """An app's ``receive``, telling the observation when the client left; takes queued events at once too."""

    __slots__ = ("_observation", "_receive")

    def __init__(self, receive: ASGIReceiveCallable, observation: Observation) -> None:
        self._receive = receive
        self._observation = observation

    async def __call__(self) -> Any:
        return self._seen(await self._receive())

    def nowait(self) -> Any:
        """The next queued event, with no checkpoint (see ``receive_nowait``)."""
        return self._seen(receive_nowait(self._receive))

    def _seen(self, event: Any) -> Any:
        if event["type"] == "http.disconnect":
            self._observation.client_left()  # a 499 unless a reply had started
        return event

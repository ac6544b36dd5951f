"""
Asking Rhetor's own actors: typed messages, and the one translation from actor errors to Rhetor's.

A message that an actor answers with a value of type ``R`` subclasses
:class:`Ask` ``[R]`` (``class GetWindow(Ask[ContextWindow])``); :func:`ask`
then returns an ``R`` to the type checker, so no caller casts or dispatches
by name. The actor's ``handle`` is what keeps that promise: each store actor
matches every message class it declares and answers exactly its reply type.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

import actors
from rhetor._errors import (
    InternalError,
    ProviderError,
    ProviderUnavailable,
    RhetorError,
    ServiceUnavailable,
    UpstreamTimeout,
)

__all__ = ["Ask", "as_provider_error", "as_rhetor_error", "ask"]

R = TypeVar("R", covariant=True)
T = TypeVar("T")


class Ask(Generic[R]):
    """
    Base of a message answered with an ``R``; subclasses are ``@attrs.frozen`` values.

    It adds no fields and no behaviour: the type parameter is the contract.
    """

    __slots__ = ()


def as_rhetor_error(name: str, exc: actors.ActorError, timeout: float) -> RhetorError:
    """
    What an ask (or stream) to the actor ``name`` failing with ``exc`` means to a caller.

    ``HandlerFailed`` (the actor met a bug handling this one request, logged it with
    its traceback and kept serving) is :class:`InternalError`, naming the actor and
    the exception's type but never its text or traceback. Silence past ``timeout``
    and every way of being gone are :class:`ServiceUnavailable`.
    """
    if isinstance(exc, actors.HandlerFailed):
        return InternalError(f"internal error in {name} ({exc.boxed_type.__name__})")
    if isinstance(exc, actors.AskTimeout):
        return ServiceUnavailable(f"{name} did not answer in {timeout:g}s")
    return ServiceUnavailable(f"{name} is unavailable: {exc}")


def as_provider_error(
    exc: ProviderError | actors.ActorError, provider: str, model: str, timeout: float
) -> ProviderError:
    """
    What a call to a provider actor failing with ``exc`` means for that one candidate.

    The provider's own errors (what its upstream answered) pass as they are;
    silence past ``timeout`` is :class:`UpstreamTimeout`; a bug the actor met
    on this call (``HandlerFailed``, logged there with its traceback) is a
    :class:`ProviderError` naming the exception's type, so that the Router
    falls back; only a provider actor that is gone is :class:`ProviderUnavailable`.
    """
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, actors.HandlerFailed):
        return ProviderError(
            f"{provider} met an internal error on this call ({exc.boxed_type.__name__})",
            provider=provider,
            model=model,
        )
    if isinstance(exc, actors.AskTimeout):
        return UpstreamTimeout(
            f"{provider} sent nothing for {timeout:g}s", provider=provider, model=model
        )
    return ProviderUnavailable(f"{provider} actor is down: {exc}", provider=provider, model=model)


@overload
async def ask(ref: actors.Ref, message: Ask[T], *, timeout: float = 10.0) -> T: ...


@overload
async def ask(ref: actors.Ref, message: object, *, timeout: float = 10.0) -> Any: ...


async def ask(ref: actors.Ref, message: object, *, timeout: float = 10.0) -> Any:
    """
    Ask an internal actor; its failures become Rhetor's (see :func:`as_rhetor_error`).

    An :class:`Ask` ``[R]`` message is answered with an ``R``. Errors the actor
    answers with (its ``errors``, e.g. any RhetorError) pass through with their
    own type.
    """
    try:
        return await ref.ask(message, timeout=timeout)
    except actors.ActorError as exc:
        raise as_rhetor_error(ref.name, exc, timeout) from exc

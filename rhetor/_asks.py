"""
Asking Rhetor's own actors: the one translation from actor errors to Rhetor's.
"""

from __future__ import annotations

from typing import Any

import actors
from rhetor._errors import ServiceUnavailable

__all__ = ["ask"]


async def ask(ref: actors.Ref, message: Any, *, timeout: float = 10.0) -> Any:
    """
    Ask an internal actor; its death or silence becomes :class:`ServiceUnavailable`.

    Errors the actor answers with (its ``errors``, e.g. any RhetorError) pass
    through with their own type.
    """
    try:
        return await ref.ask(message, timeout=timeout)
    except actors.AskTimeout as exc:
        raise ServiceUnavailable(f"{ref.name} did not answer in {timeout:g}s") from exc
    except actors.ActorError as exc:
        raise ServiceUnavailable(f"{ref.name} is unavailable: {exc}") from exc

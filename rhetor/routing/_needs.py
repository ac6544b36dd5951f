"""
What a request needs of the model that answers it, and whether a model has it.

A request with tools needs a model that can call them; one with images, a model
that sees; one asking for JSON, a model that can hold to it; one carrying a
client's untranslated parameters or blocks relayed as they came (an Anthropic
``document``), a provider of that client's API family. Each
such need names the request field that makes it, so that a request no candidate
can serve is refused with a 400 naming that field (never answered by a model that
silently ignores it).

Two kinds of need (:class:`Need`): a model's own *capabilities*, stated in the
model catalogue (``capabilities`` in ``config/tasks.json``: ``tools``, ``vision``,
``json_schema``, ``json_mode``), and the *features* of its provider's wire format
(:mod:`rhetor.providers._families`: ``image_url``, ``forced_tool_choice``,
``tool_result_image``, ``loose_tool_arguments``, ``family:<name>``). Whatever a
provider's wire module would refuse to write is one of these, so it is refused
here, before any model is tried, as a 400 (never a provider failure). A model the catalogue does not list is taken at its word for
its capabilities; a provider of a family Rhetor does not know, for every feature
but another family's parameters. The simulated provider has everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from rhetor._content import Image, ToolCall, ToolResult, Verbatim
from rhetor._errors import ValidationError
from rhetor._types import ChatMessage, LLMRequest
from rhetor.providers._families import SIMULATED, family_feature, features_of, unportable

__all__ = ["DESCRIPTIONS", "Need", "fitting", "lacking", "needs_of"]

# What each need is, in words for a refusal or the routing explanation.
DESCRIPTIONS = {
    "tools": "tool use",
    "vision": "image input",
    "json_schema": "JSON schema output",
    "json_mode": "JSON output",
    "image_url": "images given by URL",
    "forced_tool_choice": "a forced tool choice",
    "tool_result_image": "images in tool results",
    "loose_tool_arguments": "tool-call arguments that are not a JSON object",
}


@attrs.frozen
class Need:
    """
    One thing a request needs of its model: a catalogue capability (``model_level``)
    or a feature of the provider's wire format, and the request field that needs it.
    """

    capability: str
    field: str
    model_level: bool = True

    @property
    def description(self) -> str:
        """The need in words."""
        if self.capability.startswith("family:"):
            what = "content blocks" if self.field == "messages" else "parameters"
            return f"{self.capability.removeprefix('family:')}'s own {what}"
        return DESCRIPTIONS.get(self.capability, self.capability)


def needs_of(request: LLMRequest, messages: Sequence[ChatMessage]) -> tuple[Need, ...]:
    """
    What ``request`` needs, with ``messages`` the conversation it sends (window included).
    """
    needs: list[Need] = []
    if request.offers_tools:
        needs.append(Need("tools", "tools"))
        if request.tool_choice is not None and request.tool_choice.forces:
            needs.append(Need("forced_tool_choice", "tool_choice", model_level=False))
    elif any(m.tool_calls or m.tool_results for m in messages if m.blocks):
        needs.append(Need("tools", "messages"))
    images = [image for m in messages if m.blocks for image in m.images]
    if images:
        needs.append(Need("vision", "messages"))
        if any(image.url is not None for image in images):
            needs.append(Need("image_url", "messages", model_level=False))
        if any(_has_image(result) for m in messages for result in m.tool_results):
            needs.append(Need("tool_result_image", "messages", model_level=False))
    if any(_loose(call) for m in messages if m.blocks for call in m.tool_calls):
        needs.append(Need("loose_tool_arguments", "messages", model_level=False))
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema":
        needs.append(Need("json_schema", "response_format"))
    elif fmt is not None and fmt.type == "json_object":
        needs.append(Need("json_mode", "response_format"))
    relayed = {b.family for m in messages if m.blocks for b in m.blocks if isinstance(b, Verbatim)}
    for family in sorted(relayed):
        needs.append(Need(family_feature(family), "messages", model_level=False))
    extra = request.passthrough
    if extra is not None and (names := unportable(extra.family, extra.params)):
        needs.append(Need(family_feature(extra.family), names[0], model_level=False))
    return tuple(needs)


def _has_image(result: ToolResult) -> bool:
    return any(isinstance(block, Image) for block in result.content)


def _loose(call: ToolCall) -> bool:
    """Whether a call's arguments are not a JSON object (the text OpenAI's models may write)."""
    try:
        call.input()
    except ValueError:
        return True
    return False


def _has(capabilities: frozenset[str], capability: str) -> bool:
    if capability == "json_mode":
        return bool({"json_mode", "json_schema"} & capabilities)
    return capability in capabilities


def lacking(
    needs: Sequence[Need],
    provider: str,
    family: str,
    capabilities: frozenset[str] | None,
    *,
    known: bool = False,
) -> Need | None:
    """
    The first of ``needs`` that a model of ``provider`` (a ``family`` provider) lacks,
    ``capabilities`` being the catalogue's for it (None when it is not listed); None
    when it has them all.

    With ``known``, a model the catalogue does not list has no capability (Rhetor
    choosing among a provider's models); without, it is taken at its word.
    """
    if provider == SIMULATED:
        return None
    features = features_of(family)
    for need in needs:
        if need.model_level:
            if capabilities is not None and not _has(capabilities, need.capability):
                return need
            if capabilities is None and known:
                return need
        elif need.capability.startswith("family:"):
            if features is None or need.capability not in features:
                return need
        elif features is not None and need.capability not in features:
            return need
    return None


def fitting(
    chain: list[str],
    provider_for: Callable[[str], str],
    lacks: Callable[[str, str], Need | None],
    reasons: list[str],
    simulated_fallback: bool,
) -> list[str]:
    """
    The models of ``chain`` that have what the request needs; why the others were
    skipped goes to ``reasons``.

    Error handling: when none is left, a :class:`ValidationError` naming the field
    that needs what the first model lacks, and every model tried (unless the
    simulated provider may answer).
    """
    kept: list[str] = []
    skipped: list[tuple[str, Need]] = []
    for name in chain:
        prov = provider_for(name)
        need = lacks(prov, name)
        if need is None:
            kept.append(name)
        else:
            skipped.append((f"{prov}/{name}", need))
    if skipped:
        reasons.append(
            "skipped " + ", ".join(f"{m} (no {need.description})" for m, need in skipped)
        )
    if not kept and skipped:
        need = skipped[0][1]
        if not simulated_fallback:
            tried = ", ".join(m for m, _ in skipped)
            raise ValidationError(
                need.field,
                f"needs {need.description}, which no candidate model has (tried {tried})",
            )
        reasons.append(f"no real model has {need.description}")
    return kept

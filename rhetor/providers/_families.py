"""
The API families Rhetor speaks upstream, what each can carry, and which of a client's
untranslated parameters may be left behind when a request crosses families.

A provider speaks one family (``ProviderStatus.family``): the OpenAI backend
``openai`` (OpenAI and every OpenAI-compatible server), the Anthropic backend
``anthropic``, the Ollama backend ``ollama``. What a model can do (tools, vision,
JSON schema, its context window) is the model catalogue's (``config/tasks.json``);
what the wire format of its family can carry at all is here, as *features* the
Router checks like a model's capabilities:

- ``image_url``: images given by URL (Ollama takes base64 data only);
- ``forced_tool_choice``: a tool choice of ``required`` or a named tool (Ollama has
  no tool choice);
- ``tool_result_image``: images inside a tool result (OpenAI's ``tool`` messages
  carry text only);
- ``loose_tool_arguments``: a tool call whose arguments are not a JSON object (only
  OpenAI keeps the arguments as text; Anthropic's ``input`` and Ollama's
  ``arguments`` are objects);
- ``family:<name>``: the family's own parameters, relayed untouched
  (:class:`rhetor._content.Passthrough`).

The harmless parameters (:data:`HARMLESS`) are the ones a request may carry to a
provider of another family, where they are dropped: hints about caching, service
tier, storage, effort, verbosity and sampling that change neither what a reply
means nor its shape. Any other parameter without an equivalent keeps the request
from other families' models, and with no model left it is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ANTHROPIC",
    "FAMILIES",
    "FEATURES",
    "HARMLESS",
    "OLLAMA",
    "OPENAI",
    "SIMULATED",
    "family_feature",
    "features_of",
    "unportable",
]

OPENAI = "openai"
ANTHROPIC = "anthropic"
OLLAMA = "ollama"
SIMULATED = "simulated"
FAMILIES = (OPENAI, ANTHROPIC, OLLAMA)


def family_feature(family: str) -> str:
    """The feature of speaking ``family``'s own parameters."""
    return f"family:{family}"


# What each family's wire format carries (see the module docstring).
FEATURES: dict[str, frozenset[str]] = {
    OPENAI: frozenset(
        {"image_url", "forced_tool_choice", "loose_tool_arguments", family_feature(OPENAI)}
    ),
    ANTHROPIC: frozenset(
        {"image_url", "forced_tool_choice", "tool_result_image", family_feature(ANTHROPIC)}
    ),
    OLLAMA: frozenset({"tool_result_image", family_feature(OLLAMA)}),
}

# Per family: its parameters that may be dropped when a request goes to another family.
HARMLESS: dict[str, frozenset[str]] = {
    OPENAI: frozenset(
        {
            "frequency_penalty",
            "presence_penalty",
            "prompt_cache_key",
            "prompt_cache_options",
            "prompt_cache_retention",
            "reasoning_effort",
            "safety_identifier",
            "service_tier",
            "store",
            "verbosity",
        }
    ),
    ANTHROPIC: frozenset(
        {
            "cache_control",
            "inference_geo",
            "service_tier",
            "speed",
            "top_k",
        }
    ),
    OLLAMA: frozenset({"keep_alive", "options"}),
}


def features_of(family: str) -> frozenset[str] | None:
    """What ``family``'s wire format carries; None for a family Rhetor does not know."""
    return FEATURES.get(family)


def unportable(family: str, params: Iterable[str]) -> list[str]:
    """Of ``params`` (words of ``family``), those no other family may leave behind, in order."""
    harmless = HARMLESS.get(family, frozenset())
    return [name for name in params if name not in harmless]

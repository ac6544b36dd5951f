"""
Block-level ``cache_control`` (Claude Code marks its system prompt, tools and latest
turn) becomes Anthropic's request-level automatic caching, so prompts sent through
``/v1/messages`` are cached upstream instead of silently not at all.
"""

from __future__ import annotations

from typing import Any

from rhetor._types import LLMRequest
from rhetor.providers._anthropic_shapes import block_cache_control, fields_from_anthropic
from rhetor.routing._billing import asks_to_cache
from tests.fakes import Reply
from tests.test_compat_tools import ANTHROPIC_TOOL, GPT_MINI, HAIKU, QUESTION, Stack

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


def marked_system(control: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "A long, stable instruction.", "cache_control": control},
    ]


def marked_turn(control: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": QUESTION, "cache_control": control}],
        }
    ]


async def test_block_breakpoints_reach_anthropic_as_automatic_caching(stack: Stack) -> None:
    """System and message breakpoints: one request-level cache_control upstream, the blocks' text intact."""
    stack.anthropic.script(Reply("Sunny."))
    await stack.ant.messages.create(
        model=HAIKU,
        max_tokens=50,
        system=marked_system(EPHEMERAL),
        messages=marked_turn(EPHEMERAL),
    )
    sent = stack.sent("anthropic")
    assert sent["cache_control"] == EPHEMERAL
    assert sent["system"] == "You are terse.A long, stable instruction."
    assert sent["messages"][0]["content"] == QUESTION


async def test_an_hour_asked_by_any_block_is_the_requests_ttl(stack: Stack) -> None:
    stack.anthropic.script(Reply("Sunny."))
    await stack.ant.messages.create(
        model=HAIKU,
        max_tokens=50,
        system=marked_system(EPHEMERAL),
        tools=[{**ANTHROPIC_TOOL, "cache_control": HOUR}],
        messages=marked_turn(EPHEMERAL),
    )
    assert stack.sent("anthropic")["cache_control"] == HOUR


async def test_a_request_level_cache_control_is_kept_as_given(stack: Stack) -> None:
    stack.anthropic.script(Reply("Sunny."))
    await stack.ant.messages.create(
        model=HAIKU,
        max_tokens=50,
        system=marked_system(HOUR),
        messages=marked_turn(EPHEMERAL),
        extra_body={"cache_control": EPHEMERAL},
    )
    assert stack.sent("anthropic")["cache_control"] == EPHEMERAL


async def test_no_breakpoint_asks_no_caching(stack: Stack) -> None:
    stack.anthropic.script(Reply("Sunny."))
    await stack.ant.messages.create(
        model=HAIKU, max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
    )
    assert "cache_control" not in stack.sent("anthropic")


async def test_breakpoints_for_another_family_are_left_behind(stack: Stack) -> None:
    """Caching hints are harmless across families: an OpenAI model answers, without them."""
    stack.openai.script(Reply("Sunny."))
    message = await stack.ant.messages.create(
        model=GPT_MINI, max_tokens=50, messages=marked_turn(HOUR)
    )
    assert message.content[0].type == "text"
    assert "cache_control" not in str(stack.sent("openai"))


def test_a_tool_results_inner_block_counts_and_malformed_marks_do_not() -> None:
    result = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "text", "text": "18", "cache_control": HOUR}],
            }
        ],
    }
    assert block_cache_control({"messages": [result]}) == HOUR
    odd = {"system": [{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]}
    assert block_cache_control(odd) is None
    assert block_cache_control({"messages": "not a list", "system": 7}) is None


def test_the_translation_makes_the_reservation_price_cache_writes() -> None:
    """A request that now asks to cache is reserved at the cache-write rate (asks_to_cache)."""
    fields = fields_from_anthropic(
        {"model": HAIKU, "max_tokens": 10, "messages": marked_turn(EPHEMERAL)}
    )
    assert fields["passthrough"].params == {"cache_control": EPHEMERAL}
    request = LLMRequest(messages=fields["messages"], passthrough=fields["passthrough"])
    assert asks_to_cache(request)

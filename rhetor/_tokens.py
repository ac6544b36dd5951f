"""
How many tokens a text is, estimated offline and the same way every time.

:func:`count_tokens` is a deterministic estimate shaped like BPE. It is for
budgeting and context windows, never for billing: providers report the real
counts, and those are what :class:`~rhetor._types.Usage` carries.

Content beyond text is counted by one rule (``docs/providers.md``, "Tokens"):

- a message costs :data:`MESSAGE_OVERHEAD` plus its text;
- an image costs :data:`IMAGE_TOKENS` (:data:`LOW_DETAIL_IMAGE_TOKENS` when it
  asks for low detail), whatever its size, since its pixels are not read here;
- a block relayed as it came (an Anthropic document, an OpenAI file) costs
  :data:`BLOCK_OVERHEAD` plus :func:`rhetor._documents.verbatim_tokens` (a PDF
  by its pages);
- a tool call costs :data:`BLOCK_OVERHEAD` plus its name and arguments text;
  a tool result :data:`BLOCK_OVERHEAD` plus its content;
- each tool offered costs :data:`TOOL_OVERHEAD` plus its name, description and
  the compact JSON of its parameters' schema; a JSON schema response format
  costs :data:`TOOL_OVERHEAD` plus its schema's compact JSON
  (:func:`count_request_tokens`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rhetor._content import (
    Image,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolResult,
    Verbatim,
)
from rhetor._documents import verbatim_tokens
from rhetor._types import ChatMessage

__all__ = [
    "BLOCK_OVERHEAD",
    "IMAGE_TOKENS",
    "LOW_DETAIL_IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "TOOL_OVERHEAD",
    "count_message_tokens",
    "count_request_tokens",
    "count_tokens",
]

# Tokens every chat message costs beyond its text (role markers, separators).
MESSAGE_OVERHEAD = 4
# An image, whatever its size: about what the providers charge for a large one
# (Anthropic about 1,600 for 1.15 megapixels; OpenAI 765 to 1,105 at high detail).
IMAGE_TOKENS = 1600
# An image asking for OpenAI's low detail: the flat 85 tokens OpenAI charges.
LOW_DETAIL_IMAGE_TOKENS = 85
# Tokens a tool call or tool result costs beyond its text (ids, markers).
BLOCK_OVERHEAD = 8
# Tokens a tool definition or a response schema costs beyond its text.
TOOL_OVERHEAD = 12

# Letters (any script), digit runs, whitespace runs, and single other characters:
# each class is counted with one C-level findall rather than a Python loop per piece.
_WORDS = re.compile(r"[^\W\d_]+")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")
_OTHERS = re.compile(r"[^\w\s]|_")


@functools.lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """
    Estimate how many tokens ``text`` is, the same way every time.

    Words count a token per four letters, numbers a token per three digits (as
    BPE vocabularies split them), punctuation a token per character. A single
    space is free, since BPE folds it into the next word; other whitespace runs
    count one token. Results are cached: stored history is counted on every
    request that sends it.
    """
    tokens = 0
    for word in _WORDS.findall(text):
        # Vocabularies hold far fewer non-ASCII merges, so such words split finer.
        tokens += (len(word) + 3) // 4 if word.isascii() else (len(word) + 1) // 2
    for digits in _DIGITS.findall(text):
        tokens += (len(digits) + 2) // 3
    spaces = _SPACES.findall(text)
    tokens += len(spaces) - spaces.count(" ")
    tokens += len(_OTHERS.findall(text))
    return tokens


def count_message_tokens(messages: Sequence[ChatMessage], system: str | None = None) -> int:
    """
    Estimate the prompt tokens of a chat: every message, plus the system prompt if any.

    A message with content blocks is counted block by block (see the module's rule).
    """
    total = 0
    for m in messages:
        total += MESSAGE_OVERHEAD + (
            _block_tokens(m.blocks) if m.blocks else count_tokens(m.content)
        )
    if system:
        total += count_tokens(system) + MESSAGE_OVERHEAD
    return total


def _block_tokens(blocks: Sequence[object]) -> int:
    total = 0
    for block in blocks:
        if isinstance(block, Text):
            total += count_tokens(block.text)
        elif isinstance(block, Image):
            total += LOW_DETAIL_IMAGE_TOKENS if block.detail == "low" else IMAGE_TOKENS
        elif isinstance(block, ToolCall):
            total += BLOCK_OVERHEAD + count_tokens(block.name) + count_tokens(block.arguments)
        elif isinstance(block, ToolResult):
            total += BLOCK_OVERHEAD + _block_tokens(block.content)
        elif isinstance(block, Verbatim):
            total += BLOCK_OVERHEAD + verbatim_tokens(block, count_tokens)
        elif isinstance(block, Thinking):
            # The text, or a redacted block's data: high for data, never low.
            total += BLOCK_OVERHEAD + count_tokens(block.text or block.redacted or "")
    return total


def count_request_tokens(
    tools: Sequence[Tool] = (), response_format: ResponseFormat | None = None
) -> int:
    """
    Estimate the prompt tokens a request's tool definitions and response schema add.
    """
    total = 0
    for tool in tools:
        total += TOOL_OVERHEAD + count_tokens(tool.name) + _schema_tokens(tool.parameters)
        if tool.description:
            total += count_tokens(tool.description)
    if response_format is not None and response_format.schema is not None:
        total += TOOL_OVERHEAD + _schema_tokens(response_format.schema)
    return total


def _schema_tokens(schema: Mapping[str, Any]) -> int:
    try:
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(schema)
    return count_tokens(text)

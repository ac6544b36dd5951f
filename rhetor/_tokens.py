"""
How many tokens a text is, estimated offline and the same way every time.

:func:`count_tokens` is a deterministic estimate shaped like BPE. It is for
budgeting and context windows, never for billing: providers report the real
counts, and those are what :class:`~rhetor._types.Usage` carries.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from rhetor._types import ChatMessage

__all__ = ["MESSAGE_OVERHEAD", "count_message_tokens", "count_tokens"]

# Tokens every chat message costs beyond its text (role markers, separators).
MESSAGE_OVERHEAD = 4

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
    """
    total = sum(count_tokens(m.content) + MESSAGE_OVERHEAD for m in messages)
    if system:
        total += count_tokens(system) + MESSAGE_OVERHEAD
    return total

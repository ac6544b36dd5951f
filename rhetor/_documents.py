"""
What a block relayed as it came (:class:`~rhetor._content.Verbatim`) is estimated to cost.

The estimate feeds a request's reservation and the context-window check, so it
must err high, never low: a provider counting far more input than Rhetor
estimated makes its charge pass the reservation (and one four times the
estimate is not believed, see docs/architecture.md). Per block:

- a PDF given as base64 data (an Anthropic ``document``, an OpenAI ``file``)
  costs :data:`PAGE_TOKENS` a page, its pages counted in the file (the page
  objects it declares); a PDF whose pages cannot be counted so (they sit in
  compressed object streams) costs a token per three characters of its base64;
- a plain-text document costs its text; anything else (a search result, a
  content document, audio) a token per three characters of its JSON.

A document whose size Rhetor cannot know (a URL, an uploaded file's id) is
refused at the edge, since no estimate of it could be trusted.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from rhetor._content import Verbatim

__all__ = ["PAGE_TOKENS", "pdf_pages", "verbatim_tokens"]

# A PDF page: Anthropic reads each as its text and an image of it (1,500 to
# 3,000 tokens a page, by its documentation); OpenAI much the same.
PAGE_TOKENS = 3000
# A page object of a PDF: "/Type /Page", and not "/Type /Pages" (the page tree).
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_DATA_URL = re.compile(r"data:application/pdf;base64,(?P<data>.*)", re.DOTALL)


def pdf_pages(data: bytes) -> int | None:
    """The page objects a PDF declares in the open; None when it shows none."""
    pages = len(_PAGE.findall(data))
    return pages or None


def _pdf_tokens(encoded: str) -> int:
    try:
        data = binascii.a2b_base64(encoded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return len(encoded) // 3
    pages = pdf_pages(data)
    return pages * PAGE_TOKENS if pages is not None else len(encoded) // 3


def _document_source(block: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """A ``document`` block's source of type ``kind``; None for any other block or source."""
    source = block.get("source")
    if block.get("type") != "document" or not isinstance(source, Mapping):
        return None
    return source if source.get("type") == kind else None


def _pdf_data(block: Mapping[str, Any]) -> str | None:
    """The base64 of a PDF the block carries: a document's source, or a file's data URL."""
    source = _document_source(block, "base64")
    if source is not None and source.get("media_type") == "application/pdf":
        data = source.get("data")
        return data if isinstance(data, str) else None
    file = block.get("file")
    if block.get("type") == "file" and isinstance(file, Mapping):
        url = file.get("file_data")
        match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
        return match["data"] if match is not None else None
    return None


def verbatim_tokens(block: Verbatim, count_tokens: Callable[[str], int]) -> int:
    """
    The tokens ``block`` is estimated to cost (see the module docstring); ``count_tokens``
    is :func:`rhetor._tokens.count_tokens`.
    """
    raw = block.block
    pdf = _pdf_data(raw)
    if pdf is not None:
        return _pdf_tokens(pdf)
    text = _document_source(raw, "text")
    if text is not None and isinstance(text.get("data"), str):
        return count_tokens(text["data"])
    return len(json.dumps(raw, separators=(",", ":"))) // 3

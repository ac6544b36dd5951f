from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhetor._errors import NotFound, ValidationError
from rhetor._tokens import MESSAGE_OVERHEAD, count_message_tokens, count_tokens
from rhetor._types import ChatMessage
from rhetor.storage._history import SQLiteHistory, validate_context_id
from rhetor.storage._interfaces import ContextHistory, ContextRecord, ContextWindow
from tests.stores import history_opener


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


def pair(window: ContextWindow) -> tuple[str | None, list[ChatMessage]]:
    """A window as ``(summary, messages)``, the shape these assertions were first written in."""
    return window.summary, list(window.messages)


@pytest.fixture
def open_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], ContextHistory]:
    """Opens the history afresh on the backend's storage (SQLite or PostgreSQL), on one clock."""
    ticks = itertools.count(1000)
    return history_opener(backend, tmp_path, request, clock=lambda: float(next(ticks)))


@pytest.fixture
def store(open_store: Callable[[], ContextHistory]) -> Iterator[ContextHistory]:
    s = open_store()
    yield s
    s.close()


@pytest.mark.parametrize(
    "cid", ["a", "ctx-1", "user@host:session_2.v1", "A" * 128, "x.y", "a-b.c:d@e_f"]
)
def test_valid_context_ids(cid: str) -> None:
    """Ids of 1-128 safe characters pass unchanged."""
    assert validate_context_id(cid) == cid


@pytest.mark.parametrize(
    "cid",
    [
        "",
        "A" * 129,
        "../etc/passwd",
        "..",
        ".hidden",
        "a..b",
        "a/b",
        "a\\b",
        "..\\..\\windows",
        "a b",
        "a\x00b",
        "ctx\n",
        "ümlaut",
        "%2e%2e",
    ],
)
def test_invalid_context_ids(cid: str) -> None:
    """Path traversal, separators, control and odd characters are rejected."""
    with pytest.raises(ValidationError) as info:
        validate_context_id(cid)
    assert info.value.field == "context_id"


def test_store_methods_validate_ids(store: ContextHistory) -> None:
    """Every store method rejects a bad context id before touching the database."""
    with pytest.raises(ValidationError):
        store.append("../x", [user("hi")])
    with pytest.raises(ValidationError):
        pair(store.window("a/b", 100))
    with pytest.raises(ValidationError):
        store.get("..")


def test_append_and_history(store: ContextHistory) -> None:
    """append() returns the running count and history() returns messages oldest first."""
    assert store.append("c", [user("one"), assistant("two")]) == 2
    assert store.append("c", [user("three")]) == 3
    got = store.history("c")
    assert [(m.seq, m.role, m.content) for m in got] == [
        (1, "user", "one"),
        (2, "assistant", "two"),
        (3, "user", "three"),
    ]
    assert got[0].tokens == count_tokens("one")
    assert got[2].message == user("three")
    assert [m.content for m in store.history("c", limit=2)] == ["two", "three"]


def test_history_of_unknown_context(store: ContextHistory) -> None:
    """history() of a context that does not exist raises NotFound."""
    with pytest.raises(NotFound):
        store.history("nope")


def test_append_rejects_bad_role(store: ContextHistory) -> None:
    """A message with an unknown role is refused and nothing is stored."""
    with pytest.raises(ValidationError) as info:
        store.append("c", [user("ok"), ChatMessage("tool", "x")])  # type: ignore[arg-type]
    assert info.value.field == "messages[1].role"
    assert store.get("c") is None


def test_metadata_merges_and_must_be_json(store: ContextHistory) -> None:
    """Metadata is merged on each append, and must be JSON-serialisable."""
    store.append("c", [user("a")], metadata={"component": "ergon", "x": 1})
    store.append("c", [user("b")], metadata={"x": 2})
    info = store.get("c")
    assert info is not None
    assert info.metadata == {"component": "ergon", "x": 2}
    with pytest.raises(ValidationError) as err:
        store.append("c", [user("c")], metadata={"bad": object()})
    assert err.value.field == "metadata"
    assert store.get("c").message_count == 2  # type: ignore[union-attr]


def test_window_keeps_newest_within_budget(store: ContextHistory) -> None:
    """window() keeps the newest messages, in order, whose tokens fit the budget."""
    texts = [f"message number {i}" for i in range(10)]
    store.append("c", [user(t) for t in texts])
    per_message = count_tokens(texts[0]) + MESSAGE_OVERHEAD
    summary, window = pair(store.window("c", per_message * 3 + per_message // 2))
    assert summary is None
    assert [m.content for m in window] == texts[-3:]
    assert pair(store.window("c", per_message * 3))[1] == [user(t) for t in texts[-3:]]
    assert pair(store.window("c", 0)) == (None, [])
    assert pair(store.window("c", 10**9))[1] == [user(t) for t in texts]


def test_window_stops_at_first_message_over_budget(store: ContextHistory) -> None:
    """A big message ends the window even if older small ones would fit: no gaps."""
    store.append("c", [user("small"), user("word " * 200), user("tiny")])
    _, window = pair(store.window("c", 50))
    assert window == [user("tiny")]


def test_window_of_unknown_context_is_empty(store: ContextHistory) -> None:
    """A window of a context that does not exist yet is empty, not an error."""
    assert pair(store.window("new", 1000)) == (None, [])


def test_summary_replaces_covered_messages(store: ContextHistory) -> None:
    """After set_summary, the window holds the summary and only later messages."""
    store.append("c", [user("one"), assistant("two"), user("three")])
    store.set_summary("c", "they counted", upto_seq=2)
    summary, window = pair(store.window("c", 1000))
    assert summary == "they counted"
    assert window == [user("three")]
    assert len(store.history("c")) == 3
    assert store.get("c").summary == "they counted"  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        store.set_summary("c", "x", upto_seq=4)
    with pytest.raises(NotFound):
        store.set_summary("nope", "x", upto_seq=0)


def test_summary_counts_against_budget(store: ContextHistory) -> None:
    """The summary's tokens come out of the budget before any message's."""
    store.append("c", [user("alpha"), user("beta")])
    store.set_summary("c", "s", upto_seq=0)
    budget = (count_tokens("s") + MESSAGE_OVERHEAD) + (count_tokens("beta") + MESSAGE_OVERHEAD)
    assert pair(store.window("c", budget)) == ("s", [user("beta")])


def test_a_window_carries_its_token_cost(store: ContextHistory) -> None:
    """A window's tokens are what its messages cost as a request counts them; the summary's apart."""
    store.append("c", [user("one two three"), assistant("four"), user("five six")])
    store.set_summary("c", "they counted", upto_seq=1)
    window = store.window("c", 1000)
    assert window.messages == (assistant("four"), user("five six"))
    assert window.tokens == count_message_tokens(window.messages)
    assert window.summary_tokens == count_tokens("they counted") + MESSAGE_OVERHEAD
    assert store.window("new", 1000) == ContextWindow(None, (), 0, 0)
    squeezed = store.window("c", window.summary_tokens)  # room for the summary alone
    assert (squeezed.messages, squeezed.tokens) == ((), 0)


def test_a_record_is_the_description_and_the_messages(store: ContextHistory) -> None:
    """record() answers get() and history() together, with the same limit; NotFound if unknown."""
    store.append("c", [user("one"), assistant("two"), user("three")], metadata={"k": 1})
    assert store.record("c") == ContextRecord(store.get("c"), store.history("c"))  # type: ignore[arg-type]
    assert store.record("c", limit=2).messages == store.history("c", limit=2)
    with pytest.raises(NotFound) as info:
        store.record("nope")
    assert info.value.field is None
    with pytest.raises(ValidationError) as error:
        store.record("c", limit=-1)
    assert error.value.field == "limit"


def test_needs_summary(store: ContextHistory) -> None:
    """needs_summary() compares the unsummarised tokens with the threshold."""
    assert not store.needs_summary("nope", 0)
    assert not store.needs_summary("nope", -1)  # unknown, whatever the threshold
    store.append("c", [user("word " * 100), user("end")])
    total = sum(count_tokens(t) + MESSAGE_OVERHEAD for t in ["word " * 100, "end"])
    assert store.needs_summary("c", total - 1)
    assert not store.needs_summary("c", total)
    store.set_summary("c", "summary", upto_seq=1)
    assert not store.needs_summary("c", total - 1)


def test_get_list_and_delete(store: ContextHistory) -> None:
    """Contexts list most recently updated first, and delete removes one with its messages."""
    store.append("a", [user("1")])
    store.append("b", [user("2"), user("3")])
    store.append("a", [user("4")])
    listed = store.list()
    assert [c.id for c in listed] == ["a", "b"]
    assert [c.message_count for c in listed] == [2, 2]
    assert listed[0].created < listed[1].created < listed[0].updated
    assert [c.id for c in store.list(limit=1, offset=1)] == ["b"]
    assert store.delete("a")
    assert not store.delete("a")
    assert store.get("a") is None
    assert store.search("1") == []
    assert [c.id for c in store.list()] == ["b"]


def test_search_finds_substrings(store: ContextHistory) -> None:
    """search() finds a literal substring, case-insensitively, with a snippet."""
    store.append("c", [user("The Quick brown fox"), assistant("lazy dog")])
    store.append("d", [user("x" * 100 + "quick" + "y" * 100)])
    hits = store.search("QUICK")
    assert {(h.context_id, h.seq, h.role) for h in hits} == {("c", 1, "user"), ("d", 1, "user")}
    far = next(h for h in hits if h.context_id == "d")
    assert "quick" in far.snippet
    assert far.snippet.startswith("…")
    assert far.snippet.endswith("…")
    assert len(far.snippet) < 100
    assert len(store.search("quick", limit=1)) == 1


@pytest.mark.parametrize(
    ("query", "matching"),
    [("100%", "done 100%"), ("a_b", "a_b"), ("\\", "back\\slash"), ("%", "done 100%")],
)
def test_search_escapes_wildcards(store: ContextHistory, query: str, matching: str) -> None:
    """LIKE wildcards and the escape character in a query match only themselves."""
    store.append("c", [user("done 100%"), user("a_b"), user("axb"), user("100 x"), user("plain")])
    store.append("c", [user("back\\slash")])
    assert [h.snippet for h in store.search(query)] == [matching]


def test_search_rejects_empty_query(store: ContextHistory) -> None:
    """An empty query is refused rather than matching everything."""
    with pytest.raises(ValidationError):
        store.search("")


def test_history_persists(open_store: Callable[[], ContextHistory]) -> None:
    """Contexts, messages and summaries survive closing and reopening the store."""
    store = open_store()
    store.append("c", [user("hello"), assistant("hi")], metadata={"k": "v"})
    store.set_summary("c", "greeting", upto_seq=1)
    store.close()
    store = open_store()
    info = store.get("c")
    assert info is not None
    assert (info.message_count, info.summary, info.metadata) == (2, "greeting", {"k": "v"})
    assert pair(store.window("c", 100)) == ("greeting", [assistant("hi")])
    assert store.append("c", [user("again")]) == 3
    store.close()


def test_concurrent_appends_to_one_context_get_consecutive_seq_numbers(
    open_store: Callable[[], ContextHistory],
) -> None:
    """Eight writers (each its own connection, as processes would be) appending to one context lose nothing."""
    stores = [open_store() for _ in range(8)]
    counts: list[int] = []

    def write(store: ContextHistory, writer: int) -> None:
        for i in range(10):
            counts.append(store.append("shared", [user(f"{writer}-{i}"), assistant("ok")]))

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = stores[0].history("shared")
    for s in stores:
        s.close()
    assert [m.seq for m in history] == list(range(1, 161))
    assert sorted(counts) == list(range(2, 161, 2))
    # Each append's two messages are adjacent: no other writer came between them.
    pairs = [(history[i].content, history[i + 1].content) for i in range(0, 160, 2)]
    assert all(second == "ok" and first != "ok" for first, second in pairs)


def test_a_nul_character_is_stored_readably(store: ContextHistory) -> None:
    """A NUL in a message (PostgreSQL's text cannot hold it) is stored; it reads back, or as U+FFFD."""
    store.append("c", [user("a\x00b")])
    assert store.history("c")[0].content in ("a\x00b", "a\ufffdb")


# -- values SQLite cannot store are the caller's ValidationError ----------------------

HUGE = 10**24
LONE = "a\ud800b"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.list(limit=HUGE), "limit"),
        (lambda s: s.list(offset=HUGE), "offset"),
        (lambda s: s.list(limit="10"), "limit"),
        (lambda s: s.history("c", limit=HUGE), "limit"),
        (lambda s: s.search("x", limit=HUGE), "limit"),
        (lambda s: s.search(LONE), "query"),
        (lambda s: s.append("c", [user("ok"), user(LONE)]), "messages[1].content"),
        (lambda s: s.append("c", [user("x")], metadata={"x": float("nan")}), "metadata"),
        (lambda s: s.append("c", [user("x")], metadata={"x": float("inf")}), "metadata"),
        (lambda s: s.append("c", [user("x")], metadata=["not", "an", "object"]), "metadata"),
        (lambda s: s.set_summary("c", LONE, 1), "summary"),
        (lambda s: s.set_summary("c", "fine", HUGE), "upto_seq"),
    ],
    ids=[
        "list limit",
        "list offset",
        "list limit of the wrong type",
        "history limit",
        "search limit",
        "search query",
        "message content",
        "metadata NaN",
        "metadata Infinity",
        "metadata not an object",
        "summary",
        "summary upto",
    ],
)
def test_values_sqlite_cannot_store_are_refused_naming_the_field(
    store: ContextHistory, call: Any, field: str
) -> None:
    """A 24-digit number, a lone surrogate or a non-finite metadata value is a ValidationError; nothing changes."""
    store.append("c", [user("hello")])
    with pytest.raises(ValidationError) as info:
        call(store)
    assert info.value.field == field
    assert [m.content for m in store.history("c")] == ["hello"]
    assert store.broken() is None


@pytest.mark.slow
@settings(max_examples=60)
@given(
    limit=st.integers() | st.text(st.characters(exclude_categories=())),
    offset=st.integers(min_value=-(2**70), max_value=2**70),
    query=st.text(st.sampled_from(["a", "%", "_", "\\", "é", "\ud800", "\udfff"]), min_size=1),
)
def test_hostile_listing_and_search_arguments_answer_or_refuse(
    limit: Any, offset: int, query: str
) -> None:
    """Property: list and search with any int or string answer or raise ValidationError, never anything else."""
    with SQLiteHistory(":memory:") as store:
        store.append("c", [user("a% an_b é")])
        for call in (
            lambda: store.list(limit, offset),
            lambda: store.search(query, limit),
            lambda: store.history("c", limit=limit),
        ):
            with contextlib.suppress(ValidationError):
                call()
        assert store.broken() is None

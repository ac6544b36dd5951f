"""The typed schemas (rhetor/edge/_schema.py and _schemas_*): checking bodies, and the one error translation."""

from __future__ import annotations

import json
from typing import Annotated, Any, get_args

import msgspec
import pytest
from msgspec import Meta

from rhetor._errors import RhetorError, ValidationError
from rhetor.edge._fields import MAX_INT, parse_json
from rhetor.edge._schema import Body, Closed, PositiveInt, convert, read_query
from rhetor.edge._schemas_admin import ContextsQuery, PromptFormat, SearchQuery, TemplateBody
from rhetor.edge._schemas_anthropic import AnthropicMessage, MessagesBody
from rhetor.edge._schemas_native import ChatBody, MessageBody, RoutingHints
from rhetor.edge._schemas_openai import OpenAIMessage
from rhetor.edge._schemas_ws import CancelPayload, LLMRequestPayload
from rhetor.storage._rendering import PROMPT_FORMATS


class Numbers(Body, frozen=True, kw_only=True):
    """A body with one bounded number and one whole number."""

    x: Annotated[float, Meta(ge=0, le=10)] | None = None
    n: PositiveInt | None = None


def read(body: Any, schema: type[Any], **kwargs: Any) -> Any:
    """What the edge does with a body: ``parse_json`` on its text, then the schema."""
    return convert(parse_json(json.dumps(body)), schema, **kwargs)


def error_of(body: Any, schema: type[Any], **kwargs: Any) -> RhetorError:
    with pytest.raises(RhetorError) as caught:
        read(body, schema, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "must be a number, not a boolean"),
        ("1", "must be a number, not a string"),
        (-1, "must be at least 0"),
        (11, "must be at most 10"),
        ([1], "must be a number, not an array"),
    ],
)
def test_a_number_field_wants_a_number_in_range(value: Any, message: str) -> None:
    """Each wrong value is named in Rhetor's words, not msgspec's."""
    error = error_of({"x": value}, Numbers)
    assert isinstance(error, ValidationError) and error.message == f"x: {message}"


def test_a_number_no_float_holds_is_a_validation_error_not_an_overflow() -> None:
    """A 400-digit integer is a 422 naming the field, not an OverflowError, in either step."""
    assert error_of({"x": 10**400}, Numbers).field == "x"  # parse_json: not within 64 bits
    with pytest.raises(ValidationError) as caught:
        convert({"x": 10**400}, Numbers)  # the schema alone
    assert caught.value.message == "x: must be a finite number"


def test_whole_numbers_are_bounded_and_two_point_oh_counts_as_whole() -> None:
    """Whole numbers are at most MAX_INT (exact in a double); 2.0 counts as whole, 1.5 and true not."""
    assert read({"n": 2.0}, Numbers).n == 2
    assert type(read({"n": 2}, Numbers).n) is PositiveInt
    assert read({"n": MAX_INT}, Numbers).n == MAX_INT
    for bad in (MAX_INT + 1, 1e300, 1.5, 0, True, "3"):
        assert error_of({"n": bad}, Numbers).field == "n", bad


def test_strings_must_be_valid_unicode_wherever_they_sit() -> None:
    """A lone surrogate in a string field, or in a list of strings, names its place."""
    assert error_of({"name": "a\ud800b"}, Numbers).field == "name"  # an ignored field too
    error = error_of({"name": "t", "content": "x", "required": ["ok", "\udfff"]}, TemplateBody)
    assert error.field == "required[1]"
    assert read({"name": "café", "content": "x"}, TemplateBody).name == "café"


@pytest.mark.parametrize(
    ("routing", "field"),
    [
        (True, "routing_parameters"),
        ({"required_capabilities": True}, "routing_parameters.required_capabilities"),
        ({"required_capabilities": "vision"}, "routing_parameters.required_capabilities"),
        ({"required_capabilities": [1]}, "routing_parameters.required_capabilities[0]"),
        ({"complexity": ["low"]}, "routing_parameters.complexity"),
        ({"complexity": "extreme"}, "routing_parameters.complexity"),
        ({"max_cost": -0.5}, "routing_parameters.max_cost"),
        ({"max_cost": 10**400}, "routing_parameters.max_cost"),
    ],
)
def test_each_routing_hint_is_checked_and_named_in_full(routing: Any, field: str) -> None:
    """Each routing hint is checked and named in full."""
    assert error_of({"message": "x", "routing_parameters": routing}, MessageBody).field == field


def test_routing_keeps_only_the_known_hints() -> None:
    """Unknown keys (the seeds send task_type there) are dropped; empty lists too."""
    routing = {"task_type": "chat", "complexity": "low", "max_cost": 1, "required_capabilities": []}
    body = read({"message": "x", "routing_parameters": routing}, MessageBody)
    assert body.request_kwargs()["routing_parameters"] == {"complexity": "low", "max_cost": 1.0}
    assert read({"message": "x"}, MessageBody).request_kwargs()["routing_parameters"] is None
    assert "required_capabilities" in RoutingHints.__struct_fields__


def test_the_timeout_is_from_a_second_to_a_day() -> None:
    """A timeout is a finite number of seconds, at least 1 (a shorter one fails every request) and at most a day."""
    assert read({"message": "x", "timeout": 30}, MessageBody).request_kwargs()["timeout"] == 30
    assert error_of({"message": "x", "timeout": 1e9}, MessageBody).field == "timeout"
    for short in (0, 5e-324, 0.5):
        assert error_of({"message": "x", "timeout": short}, MessageBody).message == (
            "timeout: must be at least 1"
        )


def test_the_context_is_context_id_over_http_and_context_over_websocket() -> None:
    """Each transport reads its own spelling first and accepts the other."""
    both = {"message": "x", "context_id": "http", "context": "ws"}
    assert read(both, MessageBody).request_kwargs()["context_id"] == "http"
    assert read(both, LLMRequestPayload).request_kwargs(websocket=True)["context_id"] == "ws"
    assert (
        read({"message": "x", "context": "ws"}, MessageBody).request_kwargs()["context_id"] == "ws"
    )
    assert read({"message": "x", "task_type": ""}, MessageBody).request_kwargs()["task_type"] == (
        "default"
    )


@pytest.mark.parametrize(
    ("body", "schema", "field", "message"),
    [
        ({}, MessageBody, "message", "is required"),
        ({"message": ""}, MessageBody, "message", "must not be empty"),
        ([1, 2], MessageBody, "body", "must be an object, not an array"),
        ({"messages": []}, ChatBody, "messages", "must not be empty"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            ChatBody,
            "messages[0].role",
            "must be assistant, system or user",
        ),
        ({"messages": [{"role": "user"}]}, ChatBody, "messages[0].content", "is required"),
        ({"messages": [None]}, ChatBody, "messages[0]", "must be an object, not null"),
        ({"name": "t", "content": "x", "extra": 1}, TemplateBody, "extra", "unknown field"),
        (
            {"name": "t", "content": "x", "defaults": []},
            TemplateBody,
            "defaults",
            "must be an object, not an array",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            MessagesBody,
            "max_tokens",
            "Field required",
        ),
    ],
)
def test_schema_errors_name_the_field_by_its_path_in_rhetors_words(
    body: Any, schema: type[Any], field: str, message: str
) -> None:
    """Missing, empty, mistyped, unknown and out-of-choice fields each read as Rhetor says them."""
    error = error_of(body, schema)
    assert type(error) is ValidationError
    assert (error.field, error.message) == (field, f"{field}: {message}")


def test_a_frame_payload_error_is_named_under_the_payload_when_asked() -> None:
    """``at`` puts the payload's own path before the field; the root is named by ``what``."""
    assert error_of({}, CancelPayload, at="payload").field == "payload.id"
    assert error_of({"id": True}, CancelPayload, at="payload").field == "payload.id"
    assert error_of([], CancelPayload, what="frame").field == "frame"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({}, 100), ({"limit": ""}, 100), ({"limit": "12"}, 12), ({"offset": "0"}, 100)],
)
def test_a_query_number_is_read_from_its_text(raw: dict[str, str], expected: int) -> None:
    """An absent or empty parameter takes the default."""
    assert read_query(ContextsQuery, raw).limit == expected


@pytest.mark.parametrize("raw", ["9" * 24, "-1", "ten", "1.5", "9" * 5000, "0"])
def test_a_query_number_storage_cannot_take_is_refused(raw: str) -> None:
    """A 24-digit limit is a 422 naming it, before it could overflow SQLite."""
    with pytest.raises(ValidationError) as caught:
        read_query(ContextsQuery, {"limit": raw})
    assert caught.value.field == "limit"


def test_a_required_query_parameter_is_named() -> None:
    """``q`` is required and must not be empty."""
    with pytest.raises(ValidationError) as caught:
        read_query(SearchQuery, {"q": ""})
    assert caught.value.message == "q: is required"


def test_content_is_a_string_or_the_text_of_its_parts() -> None:
    """A string is itself; an array's text parts are joined; refusal text counts where allowed."""
    parts = [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "b"}]
    assert read({"role": "user", "content": "plain"}, OpenAIMessage).text() == "plain"
    assert read({"role": "assistant", "content": parts}, OpenAIMessage).text() == "ab"
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert read({"role": "user", "content": blocks}, AnthropicMessage).text() == "ab"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (5, "m.content"),
        ([{"type": "video_url", "video_url": {}}], "m.content[0]"),
        ([{"type": "image_url", "image_url": {}}], "m.content[0].image_url.url"),
        (["text"], "m.content[0]"),
        ([{"type": ["text"]}], "m.content[0]"),
        ([{"text": "x"}], "m.content[0]"),
        ([{"type": "text", "text": 3}], "m.content[0].text"),
    ],
)
def test_content_of_another_kind_is_refused_naming_the_part(content: Any, field: str) -> None:
    """A number, a non-text part, a bare string part, a part without a type or non-string text names what to fix."""
    error = error_of({"role": "user", "content": content}, OpenAIMessage, at="m")
    assert error.field == field


def test_an_unsupported_part_says_which_types_are() -> None:
    """The message of an unknown ``type`` lists the types the API takes."""
    error = error_of({"role": "user", "content": [{"type": "container_upload"}]}, AnthropicMessage)
    assert error.message == (
        "content[0]: type 'container_upload' is not supported; use text, image, tool_use, "
        "tool_result, thinking, redacted_thinking, document or search_result"
    )


def test_the_closed_bodies_refuse_what_the_open_ones_ignore() -> None:
    """An unknown field is a 422 in a template body and ignored in an LLM request."""
    assert read({"message": "x", "source": "seed"}, MessageBody).message == "x"
    assert issubclass(TemplateBody, Closed) and not issubclass(MessageBody, Closed)


def test_the_prompt_formats_are_the_stores() -> None:
    """The schema's formats are those ``generate_prompt`` knows."""
    assert get_args(PromptFormat) == PROMPT_FORMATS


def test_a_schema_error_never_leaks_msgspecs_error() -> None:
    """convert raises Rhetor's ValidationError, with no msgspec error chained for a client to see."""
    with pytest.raises(ValidationError) as caught:
        convert({"x": "1"}, Numbers)
    assert caught.value.__cause__ is None
    assert not isinstance(caught.value, msgspec.ValidationError)

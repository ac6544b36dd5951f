"""
Typed schemas: what a request body, query string or WebSocket frame may hold, declared once.

Every body is one :class:`Body` (a frozen ``msgspec.Struct``), every query
string one :class:`Query`, every WebSocket frame one :class:`Body` too; the
modules ``_schemas_native``, ``_schemas_admin``, ``_schemas_openai``,
``_schemas_anthropic`` and ``_schemas_ws`` hold them, one class per body.
The same classes check requests (:func:`convert`, :func:`operation`) and
make the published OpenAPI document (``rhetor.edge._openapi``), so the two
cannot drift apart.

A body is read in two steps. ``rhetor.edge._fields.parse_json`` first refuses
what no field may hold, wherever it sits (invalid UTF-8, ``NaN``, lone
surrogates, numbers past 64 bits, nesting past 64), then :func:`convert`
checks it against its schema: types, ranges, required and unknown fields.
:func:`schema_error` is the one place a schema error becomes Rhetor's
:class:`ValidationError`, naming the field by its path
(``messages[0].content``) with a message in Rhetor's words ("must be a
string, not a number"), whatever the API family; each family's error
handler then gives it its shape.

Unknown fields are ignored unless a body says ``forbid_unknown_fields=True``
(see :class:`Closed`): the LLM request bodies take the extras the seeds'
clients and the official SDKs send, while template and prompt bodies refuse
a stray field as the client's mistake.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, ClassVar, TypeVar

import attrs
import msgspec
from msgspec import Meta
from msgspec import inspect as mi
from quart import request

from rhetor._errors import ValidationError
from rhetor.edge._fields import MAX_INT
from rhetor.edge._http import read_body

__all__ = [
    "OPERATION_ATTRIBUTE",
    "Body",
    "Closed",
    "NonEmpty",
    "Operation",
    "PositiveInt",
    "Query",
    "QueryCount",
    "StreamEvent",
    "convert",
    "operation",
    "operation_of",
    "read_query",
    "schema_error",
    "schema_hook",
]

S = TypeVar("S")
View = Callable[..., Awaitable[Any]]

# The attribute of a view function where operation() leaves its Operation.
OPERATION_ATTRIBUTE = "__rhetor_operation__"


class Body(msgspec.Struct, kw_only=True, frozen=True):
    """
    A JSON object a client sends; unknown fields are ignored.
    """

    # What a missing required field is called; the Anthropic API says "Field required".
    required_message: ClassVar[str] = "is required"


class Closed(Body, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """
    A JSON object a client sends; an unknown field is a 422 naming it.
    """


class Query(msgspec.Struct, kw_only=True, frozen=True):
    """
    A query string's parameters (an empty value counts as absent; others are ignored).
    """

    required_message: ClassVar[str] = "is required"


class PositiveInt(int):
    """
    A whole number from 1 to 2^53 - 1: exact in a double, so every JSON client reads it back.

    ``2.0`` counts as whole (it is an ``integer`` in JSON Schema too), ``1.5``
    and ``true`` do not. msgspec hands these to :func:`_decode` (its
    ``dec_hook``), which checks them; their schema is :func:`schema_hook`'s.
    """


# A string that must not be empty.
NonEmpty = Annotated[str, Meta(min_length=1)]
# A whole-number query parameter from 0 (limits and offsets).
QueryCount = Annotated[int, Meta(ge=0, le=MAX_INT)]


def _decode(kind: type, value: Any) -> Any:
    """msgspec's ``dec_hook``: the custom types above, from their JSON values."""
    if kind is PositiveInt:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be a whole number, not {_kind_of(value)}")
        if value < 1:
            raise ValueError("must be at least 1")
        if value > MAX_INT:
            raise ValueError(f"must be at most {MAX_INT}")
        return PositiveInt(value)
    raise NotImplementedError(f"no decoder for {kind!r}")


def schema_hook(kind: type) -> dict[str, Any]:
    """The JSON Schema of the custom types above (msgspec's ``schema_hook``)."""
    if kind is PositiveInt:
        return {"type": "integer", "minimum": 1, "maximum": MAX_INT}
    raise NotImplementedError(f"no schema for {kind!r}")


# -- reading -------------------------------------------------------------------------


def convert(value: Any, schema: type[S], *, at: str | None = None, what: str = "body") -> S:
    """
    ``value`` (JSON values, already through ``parse_json``) checked and typed as ``schema``.

    ``at`` is the path of ``value`` inside what the client sent, put before
    every field an error names (``payload`` for a WebSocket frame's payload);
    ``what`` names ``value`` itself when the error is about the whole of it.

    Error handling: :class:`ValidationError` naming the first bad field (see
    :func:`schema_error`).
    """
    try:
        return msgspec.convert(value, schema, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise schema_error(exc, schema, at=at, what=what) from None


def read_query(schema: type[S], args: Mapping[str, str]) -> S:
    """
    The query string ``args`` as ``schema``: numbers from their text, empty values dropped.

    Error handling: :class:`ValidationError` naming the parameter.
    """
    present = {key: value for key, value in args.items() if value != ""}
    try:
        return msgspec.convert(present, schema, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise schema_error(exc, schema, what="query") from None


# -- the one translation: msgspec's errors -> ValidationError -------------------------

_WHERE = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_BOUND = re.compile(r"^Expected `(?P<kind>\w+)` (?P<op>>=|<=|>|<) (?P<limit>\S+)$")
_LENGTH = re.compile(r"^Expected `(?P<kind>\w+)` of length (?P<op>>=|<=) (?P<limit>\d+)$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_ENUM = re.compile(r"^Invalid enum value (?P<value>.+)$")
_TAG = re.compile(r"^Invalid value (?P<value>.+)$")
_OUT_OF_RANGE = "Integer value out of range"
_NOT_FINITE = "Number out of range"

_KINDS = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "list": "an array",
    "null": "null",
}
_GOT = {**_KINDS, "int": "a number", "float": "a number", "bool": "a boolean"}
_BOUNDS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}

Path = tuple[str | int, ...]


def schema_error(
    exc: msgspec.ValidationError, schema: type, *, at: str | None = None, what: str = "body"
) -> ValidationError:
    """
    The :class:`ValidationError` a schema error is: its field's path and a message in Rhetor's words.

    msgspec says where (`` - at `$.messages[0].role` ``) and what (``Expected
    `str`, got `int```); this gives the field as Rhetor names it
    (``messages[0].role``, with ``at`` before it, or ``what`` for the value as
    a whole) and the message as the rest of Rhetor says it ("must be a
    string, not a number"). A choice (a ``Literal``, or a tagged union's
    ``type``) lists what it accepts; a tagged union's ``type`` is reported
    on the object it tags (``content[0]``), as the APIs' own errors do.
    """
    found = _WHERE.match(str(exc))
    assert found is not None  # the pattern matches any text
    text, path = found["message"], _parse_path(found["path"] or "")
    message = text
    if match := _MISSING.match(text):
        name = match["name"]
        owner = _struct_at(schema, path)
        if _tag_field(schema, path) == name:
            message = "must have a type"
        else:
            path = (*path, name)
            message = getattr(owner, "required_message", "is required")
    elif match := _UNKNOWN.match(text):
        path, message = (*path, match["name"]), "unknown field"
    elif match := _EXPECTED.match(text):
        wanted = [_KINDS.get(k, k) for k in match["want"].split(" | ") if k != "null"]
        got = _GOT.get(match["got"], match["got"])
        message = f"must be {' or '.join(wanted) or 'null'}, not {got}"
        if path and _tag_field(schema, path[:-1]) == path[-1]:
            path, message = path[:-1], f"type must be a string, not {got}"
    elif match := _BOUND.match(text):
        limit = match["limit"]
        if match["kind"] == "float":
            limit = f"{float(limit):g}"
        message = f"must be {_BOUNDS[match['op']]} {limit}"
    elif match := _LENGTH.match(text):
        limit = int(match["limit"])
        if match["op"] == ">=" and limit == 1:
            message = "must not be empty"
        else:
            unit = "characters" if match["kind"] == "str" else "items"
            message = f"must have {_BOUNDS[match['op']]} {limit} {unit}"
    elif text == _OUT_OF_RANGE:  # past 64 bits, either way
        message = "must be a number that fits in 64 bits"
    elif text == _NOT_FINITE:
        message = "must be a finite number"
    elif match := _ENUM.match(text):
        choices = _choices(schema, path)
        message = f"must be {_one_of(choices)}" if choices else f"{match['value']} is not allowed"
    elif (match := _TAG.match(text)) and path and _tag_field(schema, path[:-1]) == path[-1]:
        choices = _tags(schema, path[:-1])
        path = path[:-1]
        message = f"type {match['value']} is not supported; use {_one_of(choices)}"
    return ValidationError(_field_name(path, at, what), message)


def _parse_path(text: str) -> Path:
    steps: list[str | int] = []
    for key, index in _STEP.findall(text):
        if key:
            steps.append(key)
        elif index:
            steps.append(int(index))
        else:
            break  # a mapping's key ([...]): the mapping is the field
    return tuple(steps)


def _field_name(path: Path, at: str | None, what: str) -> str:
    name = at or ""
    for key in path:
        if isinstance(key, int):
            name = f"{name or what}[{key}]"
        elif name:
            name = f"{name}.{key}"
        else:
            name = key
    return name or what


def _one_of(choices: list[str]) -> str:
    if len(choices) == 1:
        return choices[0]
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    return _GOT.get(
        {bool: "bool", int: "int", float: "float", str: "str", list: "array", dict: "object"}.get(
            type(value), ""
        ),
        type(value).__name__,
    )


# -- finding the declared type at a path (for the messages above) -----------------------


@functools.cache
def _info(schema: type) -> mi.Type:
    return mi.type_info(schema)


def _options(node: mi.Type) -> list[mi.Type]:
    if isinstance(node, mi.Metadata):
        return _options(node.type)
    if isinstance(node, mi.UnionType):
        return [option for member in node.types for option in _options(member)]
    return [node]


def _step(node: mi.Type, key: str | int) -> mi.Type | None:
    for option in _options(node):
        if isinstance(key, int) and isinstance(option, mi.ListType | mi.VarTupleType):
            return option.item_type
        if isinstance(key, str) and isinstance(option, mi.StructType):
            for field in option.fields:
                if field.encode_name == key:
                    return field.type
        if isinstance(key, str) and isinstance(option, mi.DictType):
            return option.value_type
    return None


def _node_at(schema: type, path: Path) -> mi.Type | None:
    node: mi.Type | None = _info(schema)
    for key in path:
        if node is None:
            return None
        node = _step(node, key)
    return node


def _struct_at(schema: type, path: Path) -> type | None:
    node = _node_at(schema, path)
    if node is None:
        return None
    return next((o.cls for o in _options(node) if isinstance(o, mi.StructType)), None)


def _tagged(schema: type, path: Path) -> list[mi.StructType]:
    node = _node_at(schema, path)
    if node is None:
        return []
    return [o for o in _options(node) if isinstance(o, mi.StructType) and o.tag_field]


def _tag_field(schema: type, path: Path) -> str | None:
    tagged = _tagged(schema, path)
    return tagged[0].tag_field if tagged else None


def _tags(schema: type, path: Path) -> list[str]:
    return [str(o.tag) for o in _tagged(schema, path)]


def _choices(schema: type, path: Path) -> list[str]:
    node = _node_at(schema, path)
    if node is None:
        return []
    values = [v for o in _options(node) if isinstance(o, mi.LiteralType) for v in o.values]
    return [str(v) for v in values]


# -- operations: a view's schemas, read before it runs ------------------------------------


@attrs.frozen
class StreamEvent:
    """
    One kind of Server-Sent Event a stream sends: the schema of its JSON ``data``.

    ``named``: the event carries ``event:``, the ``type`` its data holds (the
    Anthropic and Responses streams), read from the schema's tag or its
    ``type`` literal; otherwise it is ``data:`` alone. ``literal``: the data is
    this text instead of JSON (OpenAI's ``[DONE]``), and ``schema`` is None.
    """

    schema: type[msgspec.Struct] | None
    named: bool = False
    literal: str | None = None

    def names(self) -> tuple[str, ...]:
        """The ``event:`` names this kind is sent under (none when unnamed)."""
        if not self.named or self.schema is None:
            return ()
        info = mi.type_info(self.schema)
        assert isinstance(info, mi.StructType)
        if info.tag is not None:
            return (str(info.tag),)
        kind = next(f.type for f in info.fields if f.name == "type")
        assert isinstance(kind, mi.LiteralType), f"{self.schema.__name__}.type is not a literal"
        return tuple(str(v) for v in kind.values)


@attrs.frozen
class Operation:
    """
    What one route takes and answers, for :func:`operation` and the OpenAPI document.

    ``body`` and ``query`` are checked before the view runs; ``reply`` is the
    schema of its success answer (None: a JSON object), sent with
    ``status``; ``streams`` says it may answer Server-Sent Events instead,
    ``events`` (when declared) which; ``also`` is another status answered
    with the same schema (``/ready``'s 503).
    """

    body: type[Body] | None = None
    query: type[Query] | None = None
    # A Struct, or a union of them (a route answering in either API's format).
    reply: Any = None
    status: int = 200
    streams: bool = False
    content_type: str = "application/json"
    also: int | None = None
    events: tuple[StreamEvent, ...] = ()


def operation(
    *,
    body: type[Body] | None = None,
    query: type[Query] | None = None,
    reply: Any = None,
    status: int = 200,
    streams: bool = False,
    content_type: str = "application/json",
    also: int | None = None,
    events: tuple[StreamEvent, ...] = (),
) -> Callable[[View], View]:
    """
    Declare a view's schemas; the view then gets ``body=`` and ``query=`` already checked.

    Error handling: a body or query that does not fit is a
    :class:`ValidationError` (or ``InvalidJSON``) raised before the view
    runs, which the app's error handlers answer in the route's API shape.
    """
    spec = Operation(body, query, reply, status, streams, content_type, also, events)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def checked(**kwargs: Any) -> Any:
            if body is not None:
                kwargs["body"] = convert(await read_body(), body)
            if query is not None:
                kwargs["query"] = read_query(query, request.args)
            return await view(**kwargs)

        setattr(checked, OPERATION_ATTRIBUTE, spec)
        return checked

    return decorate


def operation_of(view: Any) -> Operation:
    """The :class:`Operation` a view declared (an empty one when it declared none)."""
    spec: Operation = getattr(view, OPERATION_ATTRIBUTE, None) or Operation()
    return spec

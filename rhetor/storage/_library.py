"""
The prompt library: versioned templates and per-component system prompts.

Templates use Python format syntax: ``{name}`` is a variable and ``{{``/``}}``
are literal braces. Only bare names are allowed: attribute or index access and
format specs are rejected, so rendering can never reach into a value's
attributes. :func:`parse_variables` and :func:`render` are pure; a
:class:`LibraryStore` keeps templates and prompts in one SQLite file and is
synchronous (its actor calls it through ``anyio.to_thread.run_sync``).

:func:`generate_prompt` is a pure helper that drafts a structured prompt for a
task in one of a few formats.

Every value a caller passes is checked before SQLite sees it (see
:func:`rhetor.storage._sqlite.check_text`): a string that is not valid Unicode or a
number SQLite cannot hold is a :class:`ValidationError` naming the field.
"""

from __future__ import annotations

import json
import string
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from rhetor._errors import NotFound, ValidationError
from rhetor.storage._sqlite import SQLITE_INT_MIN, SQLiteStore, check_int, check_text, transaction

__all__ = [
    "PROMPT_FORMATS",
    "LibraryStore",
    "Prompt",
    "Template",
    "TemplateVersion",
    "generate_prompt",
    "parse_variables",
    "render",
]

_FORMATTER = string.Formatter()


def parse_variables(content: str) -> list[str]:
    """
    The variable names in a template, in order of first use, each once.

    Error handling: positional ``{}``, attribute or index access, conversions,
    format specs and unbalanced braces raise ``ValidationError("content", ...)``.
    """
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(content))
    except ValueError as exc:
        raise ValidationError("content", f"bad template syntax: {exc}") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValidationError(
                "content", f"variable {{{name}}} must be a plain name (no '.', '[' or position)"
            )
        if spec or conversion:
            raise ValidationError("content", f"variable {{{name}}} must not have a format spec")
        if name not in names:
            names.append(name)
    return names


def _check_value(name: str, value: object) -> str:
    if not isinstance(value, str | int | float | bool):
        raise ValidationError(
            f"parameters.{name}", f"must be a string or number, got {type(value).__name__}"
        )
    try:
        return str(value)
    except ValueError:  # an int past Python's digit limit for str()
        raise ValidationError(f"parameters.{name}", "is too large a number") from None


def render(
    content: str,
    variables: Mapping[str, object],
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    defaults: Mapping[str, str] | None = None,
) -> str:
    """
    Fill a template's variables.

    A missing required variable is an error; a missing other one takes its
    default, or "". With no ``required`` list, every variable in the content is
    required unless it is listed in ``optional``. Extra variables are ignored.
    """
    names = parse_variables(content)
    if not isinstance(variables, Mapping):
        raise ValidationError("parameters", "must be an object")
    defaults = defaults or {}
    if not required:
        required = [n for n in names if n not in optional]
    for name in required:
        if name not in variables:
            raise ValidationError(f"parameters.{name}", "missing required parameter")
    values: dict[str, str] = {}
    for name in [*required, *names]:
        if name in variables:
            values[name] = _check_value(name, variables[name])
        else:
            values[name] = defaults.get(name, "")
    return content.format_map(values)


@attrs.frozen
class TemplateVersion:
    """
    One immutable version of a template's content and parameters.
    """

    template_id: str
    version: int
    content: str
    variables: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    defaults: Mapping[str, str]
    metadata: Mapping[str, Any]
    created: float


@attrs.frozen
class Template:
    """
    A named template at one version (its current one unless asked otherwise).
    """

    id: str
    name: str
    description: str
    category: str
    current_version: int
    version: int
    content: str
    variables: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    defaults: Mapping[str, str]
    metadata: Mapping[str, Any]
    created: float
    updated: float

    def render(self, variables: Mapping[str, object]) -> str:
        """
        This version filled with ``variables``; see :func:`render`.
        """
        return render(self.content, variables, self.required, self.optional, self.defaults)


@attrs.frozen
class Prompt:
    """
    A system prompt for one component; at most one per component is the default.
    """

    id: str
    name: str
    component: str
    content: str
    description: str
    tags: tuple[str, ...]
    is_default: bool
    created: float
    updated: float


_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    description     TEXT NOT NULL DEFAULT '',
    category        TEXT NOT NULL DEFAULT 'general',
    current_version INTEGER NOT NULL,
    created         REAL NOT NULL,
    updated         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS template_versions (
    template_id TEXT    NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    content     TEXT    NOT NULL,
    variables   TEXT    NOT NULL,
    required    TEXT    NOT NULL,
    optional    TEXT    NOT NULL,
    defaults    TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    created     REAL    NOT NULL,
    PRIMARY KEY (template_id, version)
);
CREATE TABLE IF NOT EXISTS prompts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    component   TEXT NOT NULL,
    content     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '[]',
    is_default  INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS prompts_component ON prompts (component);
-- The database itself guarantees at most one default prompt per component.
CREATE UNIQUE INDEX IF NOT EXISTS prompts_one_default ON prompts (component) WHERE is_default;
"""

_TEMPLATE_QUERY = """
SELECT t.id, t.name, t.description, t.category, t.current_version, v.version, v.content,
       v.variables, v.required, v.optional, v.defaults, v.metadata, t.created, t.updated
FROM templates t JOIN template_versions v ON v.template_id = t.id
"""

_PROMPT_COLUMNS = "id, name, component, content, description, tags, is_default, created, updated"


def _reject_unknown(unknown: Mapping[str, object]) -> None:
    # Callers forward request bodies as keywords: a stray field is the client's
    # mistake (422), not a TypeError (500).
    for key in unknown:
        raise ValidationError(key, "unknown field")


def _name_list(field: str, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    if not isinstance(names, list | tuple) or not all(
        isinstance(n, str) and n.isidentifier() for n in names
    ):
        raise ValidationError(field, "must be a list of variable names")
    return list(dict.fromkeys(names))


def _json_text(field: str, value: object) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, and would come back out in
    # replies. ASCII output escapes lone surrogates, so any string is storable.
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(field, f"must be JSON-serialisable: {exc}") from exc


def _non_empty(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string")
    return check_text(field, value)


def _optional_text(field: str, value: object) -> None:
    if value is not None:
        check_text(field, value)


@attrs.frozen
class _VersionFields:
    content: str
    variables: list[str]
    required: list[str]
    optional: list[str]
    defaults: dict[str, str]
    metadata: dict[str, Any]

    @classmethod
    def check(
        cls,
        content: str,
        required: Sequence[str] | None,
        optional: Sequence[str] | None,
        defaults: Mapping[str, str] | None,
        metadata: Mapping[str, Any] | None,
    ) -> _VersionFields:
        check_text("content", content)
        variables = parse_variables(content)
        req = _name_list("required", required)
        opt = _name_list("optional", optional)
        if overlap := set(req) & set(opt):
            raise ValidationError("optional", f"also listed as required: {sorted(overlap)}")
        for name, given in (("defaults", defaults), ("metadata", metadata)):
            if given is not None and not isinstance(given, Mapping):
                raise ValidationError(name, "must be an object")
        defaults = dict(defaults or {})
        for key, value in defaults.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValidationError(f"defaults.{key}", "must be a string")
        meta = dict(metadata or {})
        _json_text("metadata", meta)
        return cls(content, variables, req, opt, defaults, meta)


@attrs.define(eq=False)
class LibraryStore(SQLiteStore):
    """
    Templates and system prompts in one SQLite file.

    Not safe for concurrent use: one owner calls it, one call at a time.
    """

    SCHEMA: ClassVar[str] = _SCHEMA
    SCHEMA_VERSION: ClassVar[int] = _SCHEMA_VERSION

    # Seconds since the epoch; replaceable so tests can order rows exactly.
    _clock: Callable[[], float] = attrs.field(default=time.time, alias="clock")

    # -- templates ---------------------------------------------------------

    def create_template(
        self,
        name: str,
        content: str,
        *,
        description: str = "",
        category: str = "general",
        required: Sequence[str] | None = None,
        optional: Sequence[str] | None = None,
        defaults: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **unknown: object,
    ) -> Template:
        """
        Store a new template at version 1.

        Error handling: a taken name raises ``ValidationError("name", "already exists")``;
        an unknown keyword raises ``ValidationError(<keyword>, "unknown field")``.
        """
        _reject_unknown(unknown)
        _non_empty("name", name)
        check_text("description", description)
        check_text("category", category)
        fields = _VersionFields.check(content, required, optional, defaults, metadata)
        template_id = uuid.uuid4().hex
        now = self._clock()
        with transaction(self._conn) as conn:
            if self._find_id(name) is not None:
                raise ValidationError("name", "already exists")
            conn.execute(
                "INSERT INTO templates (id, name, description, category, current_version,"
                " created, updated) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (template_id, name, description, category, now, now),
            )
            self._insert_version(template_id, 1, fields, now)
        return self.get_template(template_id)

    def update_template(
        self,
        id_or_name: str,
        content: str | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        category: str | None = None,
        required: Sequence[str] | None = None,
        optional: Sequence[str] | None = None,
        defaults: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **unknown: object,
    ) -> Template:
        """
        Change a template and return it.

        A change to content, required, optional, defaults or metadata makes a
        new version (unchanged fields carry over); a change to only the name,
        description or category does not.
        """
        _reject_unknown(unknown)
        current = self.get_template(id_or_name)
        now = self._clock()
        new_version = any(v is not None for v in (content, required, optional, defaults, metadata))
        if name is not None:
            _non_empty("name", name)
        _optional_text("description", description)
        _optional_text("category", category)
        fields = _VersionFields.check(
            current.content if content is None else content,
            current.required if required is None else required,
            current.optional if optional is None else optional,
            current.defaults if defaults is None else defaults,
            current.metadata if metadata is None else metadata,
        )
        with transaction(self._conn) as conn:
            if name is not None and name != current.name and self._find_id(name) is not None:
                raise ValidationError("name", "already exists")
            version = current.current_version + 1 if new_version else current.current_version
            if new_version:
                self._insert_version(current.id, version, fields, now)
            conn.execute(
                "UPDATE templates SET name = ?, description = ?, category = ?,"
                " current_version = ?, updated = ? WHERE id = ?",
                (
                    current.name if name is None else name,
                    current.description if description is None else description,
                    current.category if category is None else category,
                    version,
                    now,
                    current.id,
                ),
            )
        return self.get_template(current.id)

    def get_template(self, id_or_name: str, version: int | None = None) -> Template:
        """
        A template by id or name, at its current version or the one asked for.

        Error handling: an unknown template or version raises :class:`NotFound`.
        """
        if version is not None:
            check_int("version", version, minimum=SQLITE_INT_MIN)
        template_id = self._find_id(id_or_name)
        if template_id is None:
            raise NotFound("template", id_or_name)
        if version is None:
            row = self._conn.execute(
                _TEMPLATE_QUERY + " WHERE t.id = ? AND v.version = t.current_version",
                (template_id,),
            ).fetchone()
        else:
            row = self._conn.execute(
                _TEMPLATE_QUERY + " WHERE t.id = ? AND v.version = ?", (template_id, version)
            ).fetchone()
        if row is None:
            raise NotFound("template", f"{id_or_name} version {version}", field="version")
        return _template(row)

    def list_templates(self, category: str | None = None) -> list[Template]:
        """
        Every template at its current version, by name; optionally of one category.
        """
        _optional_text("category", category)
        where = " WHERE v.version = t.current_version"
        if category is None:
            rows = self._conn.execute(_TEMPLATE_QUERY + where + " ORDER BY t.name")
        else:
            rows = self._conn.execute(
                _TEMPLATE_QUERY + where + " AND t.category = ? ORDER BY t.name", (category,)
            )
        return [_template(row) for row in rows]

    def versions(self, id_or_name: str) -> list[TemplateVersion]:
        """
        Every version of a template, oldest first.
        """
        template_id = self._find_id(id_or_name)
        if template_id is None:
            raise NotFound("template", id_or_name)
        rows = self._conn.execute(
            "SELECT template_id, version, content, variables, required, optional, defaults,"
            " metadata, created FROM template_versions WHERE template_id = ? ORDER BY version",
            (template_id,),
        )
        return [_template_version(row) for row in rows]

    def delete_template(self, id_or_name: str) -> bool:
        """
        Delete a template and all its versions; True if it existed.
        """
        with transaction(self._conn) as conn:
            template_id = self._find_id(id_or_name)
            if template_id is None:
                return False
            conn.execute("DELETE FROM template_versions WHERE template_id = ?", (template_id,))
            conn.execute("DELETE FROM templates WHERE id = ?", (template_id,))
        return True

    def render_template(self, id_or_name: str, variables: Mapping[str, object]) -> str:
        """
        A template's current version filled with ``variables``; see :func:`render`.
        """
        return self.get_template(id_or_name).render(variables)

    def _find_id(self, id_or_name: str) -> str | None:
        check_text("template", id_or_name)
        # Ids are tried first: a template may not be named like another's id by accident.
        row = self._conn.execute(
            "SELECT id FROM templates WHERE id = ? UNION ALL"
            " SELECT id FROM templates WHERE name = ? LIMIT 1",
            (id_or_name, id_or_name),
        ).fetchone()
        return None if row is None else str(row[0])

    def _insert_version(
        self, template_id: str, version: int, fields: _VersionFields, now: float
    ) -> None:
        self._conn.execute(
            "INSERT INTO template_versions (template_id, version, content, variables, required,"
            " optional, defaults, metadata, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                template_id,
                version,
                fields.content,
                json.dumps(fields.variables),
                json.dumps(fields.required),
                json.dumps(fields.optional),
                _json_text("defaults", fields.defaults),
                _json_text("metadata", fields.metadata),
                now,
            ),
        )

    # -- system prompts ----------------------------------------------------

    def create_prompt(
        self,
        name: str,
        component: str,
        content: str,
        *,
        description: str = "",
        tags: Sequence[str] = (),
        is_default: bool = False,
        **unknown: object,
    ) -> Prompt:
        """
        Store a system prompt; as the default, it displaces the component's old default.
        """
        _reject_unknown(unknown)
        _non_empty("name", name)
        _non_empty("component", component)
        check_text("content", content)
        check_text("description", description)
        is_default = bool(is_default)
        tags_json = _tags_json(tags)
        prompt_id = uuid.uuid4().hex
        now = self._clock()
        with transaction(self._conn) as conn:
            if is_default:
                self._clear_default(component)
            conn.execute(
                f"INSERT INTO prompts ({_PROMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, name, component, content, description, tags_json, is_default, now, now),
            )
        return self.get_prompt(prompt_id)

    def update_prompt(
        self,
        prompt_id: str,
        *,
        name: str | None = None,
        component: str | None = None,
        content: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        is_default: bool | None = None,
        **unknown: object,
    ) -> Prompt:
        """
        Change a prompt's fields; making it the default displaces its component's old one.
        """
        _reject_unknown(unknown)
        current = self.get_prompt(prompt_id)
        if name is not None:
            _non_empty("name", name)
        if component is not None:
            _non_empty("component", component)
        _optional_text("content", content)
        _optional_text("description", description)
        new_component = current.component if component is None else component
        new_default = current.is_default if is_default is None else bool(is_default)
        with transaction(self._conn) as conn:
            if new_default:
                self._clear_default(new_component, keep=current.id)
            conn.execute(
                "UPDATE prompts SET name = ?, component = ?, content = ?, description = ?,"
                " tags = ?, is_default = ?, updated = ? WHERE id = ?",
                (
                    current.name if name is None else name,
                    new_component,
                    current.content if content is None else content,
                    current.description if description is None else description,
                    _tags_json(current.tags if tags is None else tags),
                    new_default,
                    self._clock(),
                    current.id,
                ),
            )
        return self.get_prompt(current.id)

    def get_prompt(self, prompt_id: str) -> Prompt:
        """
        A prompt by id.

        Error handling: an unknown id raises :class:`NotFound`.
        """
        check_text("prompt_id", prompt_id)
        row = self._conn.execute(
            f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE id = ?", (prompt_id,)
        ).fetchone()
        if row is None:
            raise NotFound("prompt", prompt_id)
        return _prompt(row)

    def list_prompts(self, component: str | None = None) -> list[Prompt]:
        """
        Every prompt by component then name; optionally of one component.
        """
        _optional_text("component", component)
        if component is None:
            rows = self._conn.execute(
                f"SELECT {_PROMPT_COLUMNS} FROM prompts ORDER BY component, name, created"
            )
        else:
            rows = self._conn.execute(
                f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE component = ? ORDER BY name, created",
                (component,),
            )
        return [_prompt(row) for row in rows]

    def delete_prompt(self, prompt_id: str) -> bool:
        """
        Delete a prompt; True if it existed.
        """
        check_text("prompt_id", prompt_id)
        with transaction(self._conn) as conn:
            cursor = conn.execute("DELETE FROM prompts WHERE id = ?", (prompt_id,))
        return cursor.rowcount > 0

    def default_prompt(self, component: str) -> Prompt | None:
        """
        The component's default prompt, or None if it has none.
        """
        check_text("component", component)
        row = self._conn.execute(
            f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE component = ? AND is_default",
            (component,),
        ).fetchone()
        return None if row is None else _prompt(row)

    def _clear_default(self, component: str, keep: str = "") -> None:
        self._conn.execute(
            "UPDATE prompts SET is_default = 0 WHERE component = ? AND is_default AND id != ?",
            (component, keep),
        )


def _tags_json(tags: Sequence[str]) -> str:
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise ValidationError("tags", "must be a list of strings")
    return json.dumps(list(tags))


def _template(row: tuple[Any, ...]) -> Template:
    (id_, name, description, category, current, version, content) = row[:7]
    variables, required, optional, defaults, metadata, created, updated = row[7:]
    return Template(
        id_,
        name,
        description,
        category,
        current,
        version,
        content,
        tuple(json.loads(variables)),
        tuple(json.loads(required)),
        tuple(json.loads(optional)),
        json.loads(defaults),
        json.loads(metadata),
        created,
        updated,
    )


def _template_version(row: tuple[Any, ...]) -> TemplateVersion:
    template_id, version, content, variables, required, optional, defaults, metadata, created = row
    return TemplateVersion(
        template_id,
        version,
        content,
        tuple(json.loads(variables)),
        tuple(json.loads(required)),
        tuple(json.loads(optional)),
        json.loads(defaults),
        json.loads(metadata),
        created,
    )


def _prompt(row: tuple[Any, ...]) -> Prompt:
    id_, name, component, content, description, tags, is_default, created, updated = row
    return Prompt(
        id_,
        name,
        component,
        content,
        description,
        tuple(json.loads(tags)),
        bool(is_default),
        created,
        updated,
    )


# -- prompt drafting ---------------------------------------------------------

PROMPT_FORMATS = ("instruction", "chat", "few_shot", "chain_of_thought", "structured")


def _context_lines(context: Mapping[str, object] | str | None) -> list[str]:
    if context is None:
        return []
    if isinstance(context, str):
        return [f"- {line.strip()}" for line in context.splitlines() if line.strip()]
    if isinstance(context, Mapping):
        try:
            return [f"- {key}: {value}" for key, value in context.items()]
        except ValueError:  # an int past Python's digit limit for str()
            raise ValidationError("context", "holds too large a number") from None
    raise ValidationError("context", "must be an object, a string or null")


def _section(title: str, lines: Sequence[str]) -> str:
    return f"## {title}\n" + "\n".join(lines)


def generate_prompt(
    task: str, context: Mapping[str, object] | str | None = None, format: str = "instruction"
) -> str:
    """
    Draft a prompt for ``task`` in ``format``, listing the context as bullets.

    Formats: ``instruction``, ``chat``, ``few_shot``, ``chain_of_thought``,
    ``structured``. The result is plain text (braces are not template syntax).
    """
    task = _non_empty("task", task).strip()
    if format not in PROMPT_FORMATS:
        raise ValidationError("format", f"must be one of {', '.join(PROMPT_FORMATS)}")
    bullets = _context_lines(context)
    parts: list[str]
    if format == "instruction":
        parts = [_section("Task", [task])]
        if bullets:
            parts.append(_section("Context", bullets))
        parts.append(
            _section(
                "Instructions",
                [
                    "1. Read the task and the context carefully.",
                    "2. Complete the task fully, using the context where it applies.",
                    "3. State any assumption you had to make.",
                    "4. Keep the answer clear and concise.",
                ],
            )
        )
    elif format == "chat":
        parts = [
            "You are a knowledgeable, friendly assistant having a conversation with the user.",
            f"The user wants help with: {task}",
        ]
        if bullets:
            parts.append("Keep this background in mind:\n" + "\n".join(bullets))
        parts.append(
            "Reply conversationally. Ask a short clarifying question if the request is "
            "ambiguous, otherwise answer directly and offer a sensible next step."
        )
    elif format == "few_shot":
        parts = [_section("Task", [task])]
        if bullets:
            parts.append(_section("Context", bullets))
        parts.append(
            _section(
                "Examples",
                [
                    "Input: <example input 1>",
                    "Output: <example output 1>",
                    "",
                    "Input: <example input 2>",
                    "Output: <example output 2>",
                ],
            )
        )
        parts.append(
            _section(
                "Now you",
                ["Follow the pattern of the examples exactly.", "Input: <your input>", "Output:"],
            )
        )
    elif format == "chain_of_thought":
        parts = [_section("Task", [task])]
        if bullets:
            parts.append(_section("Context", bullets))
        parts.append(
            _section(
                "Approach",
                [
                    "Think step by step before answering:",
                    "1. Restate the problem in your own words.",
                    "2. List the facts and constraints that matter, including the context.",
                    "3. Work through the reasoning one step at a time.",
                    "4. Check the result against the constraints.",
                    "Finish with a line starting 'Answer:' that gives the final answer.",
                ],
            )
        )
    else:  # structured
        parts = [
            _section("Role", ["You are an expert assistant for this task."]),
            _section("Objective", [task]),
            _section("Context", bullets or ["- (none given)"]),
            _section(
                "Constraints",
                [
                    "- Use only the information given or widely known facts.",
                    "- Say so explicitly when information is missing.",
                ],
            ),
            _section(
                "Output format",
                [
                    "Respond with these sections:",
                    "1. Summary: one or two sentences.",
                    "2. Details: the full answer.",
                    "3. Next steps: a bulleted list, if any.",
                ],
            ),
        ]
    return "\n\n".join(parts) + "\n"

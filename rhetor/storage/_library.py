"""
Templates and system prompts in one SQLite file: the SQLite :class:`~rhetor.storage._library_interfaces.Library`.

A :class:`SQLiteLibrary` owns one connection and is synchronous: the
PromptLibrary actor calls it through ``anyio.to_thread.run_sync``, one call
at a time. Its template operations are :class:`~rhetor.storage._templates.TemplateTables`;
its system prompt operations are here.

Every value a caller passes is checked before SQLite sees it (see
:func:`rhetor.storage._sqlite.check_text`): a string that is not valid Unicode or a
number SQLite cannot hold is a :class:`ValidationError` naming the field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from rhetor._errors import NotFound, ValidationError
from rhetor.storage._library_interfaces import Prompt
from rhetor.storage._rendering import non_empty
from rhetor.storage._sqlite import SQLiteStore, check_optional_text, check_text, transaction
from rhetor.storage._templates import TemplateTables

__all__ = ["SQLiteLibrary"]

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

_PROMPT_COLUMNS = "id, name, component, content, description, tags, is_default, created, updated"


@attrs.define(eq=False)
class SQLiteLibrary(TemplateTables, SQLiteStore):
    """
    Templates and system prompts in one SQLite file (a :class:`~rhetor.storage._library_interfaces.Library`).

    Not safe for concurrent use: one owner calls it, one call at a time.
    """

    SCHEMA: ClassVar[str] = _SCHEMA
    SCHEMA_VERSION: ClassVar[int] = _SCHEMA_VERSION

    # Seconds since the epoch; replaceable so tests can order rows exactly.
    _clock: Callable[[], float] = attrs.field(default=time.time, alias="clock")

    def create_prompt(
        self,
        name: str,
        component: str,
        content: str,
        *,
        description: str = "",
        tags: Sequence[str] = (),
        is_default: bool = False,
    ) -> Prompt:
        """
        Store a system prompt; as the default, it displaces the component's old default.
        """
        non_empty("name", name)
        non_empty("component", component)
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
    ) -> Prompt:
        """
        Change a prompt's fields; making it the default displaces its component's old one.
        """
        current = self.get_prompt(prompt_id)
        if name is not None:
            non_empty("name", name)
        if component is not None:
            non_empty("component", component)
        check_optional_text("content", content)
        check_optional_text("description", description)
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
        check_optional_text("component", component)
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

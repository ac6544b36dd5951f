"""
Templates and system prompts in PostgreSQL: the shared :class:`~rhetor.storage._library_interfaces.Library`.

A :class:`PostgresLibrary` borrows a pooled connection per call, so it is safe
from several threads and shared by every process on the database. It keeps
the promises the interfaces make for concurrent writers:

- template names stay unique: the ``UNIQUE`` constraint refuses the second
  of two creates with the same name, as a ``ValidationError`` on ``name``;
- versions stay consecutive: an update locks its template's row
  (``SELECT ... FOR UPDATE``) and numbers the new version from what it reads
  under that lock;
- one default prompt per component: a write that makes a default takes a
  transaction-level advisory lock for that component before it clears the
  old default, and a unique partial index backs the rule.

The checks and row decoding are the SQLite library's
(:mod:`rhetor.storage._templates`, :mod:`rhetor.storage._library`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import psycopg
import psycopg.errors

from rhetor._errors import NotFound, ValidationError
from rhetor.storage._library import _prompt, _tags_json
from rhetor.storage._library_interfaces import Prompt, Template, TemplateVersion
from rhetor.storage._pg import Migration, PgDatabase, pg_text
from rhetor.storage._rendering import non_empty
from rhetor.storage._sqlite import (
    SQLITE_INT_MIN,
    check_int,
    check_optional_text,
    check_text,
)
from rhetor.storage._templates import _json_text, _template, _template_version, _VersionFields

__all__ = ["LIBRARY_MIGRATIONS", "PROMPT_DEFAULT_LOCKS", "PostgresLibrary"]

# The first key of pg_advisory_xact_lock(PROMPT_DEFAULT_LOCKS, hashtext(component)).
PROMPT_DEFAULT_LOCKS = 0x5248_0004

LIBRARY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "library",
        1,
        "templates, their versions, system prompts",
        (
            """
            CREATE TABLE templates (
                id              TEXT COLLATE "C" PRIMARY KEY,
                name            TEXT COLLATE "C" NOT NULL UNIQUE,
                description     TEXT NOT NULL DEFAULT '',
                category        TEXT COLLATE "C" NOT NULL DEFAULT 'general',
                current_version BIGINT NOT NULL,
                created         DOUBLE PRECISION NOT NULL,
                updated         DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE template_versions (
                template_id TEXT COLLATE "C" NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
                version     BIGINT NOT NULL,
                content     TEXT   NOT NULL,
                variables   TEXT   NOT NULL,
                required    TEXT   NOT NULL,
                optional    TEXT   NOT NULL,
                defaults    TEXT   NOT NULL,
                metadata    TEXT   NOT NULL,
                created     DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (template_id, version)
            )
            """,
            """
            CREATE TABLE prompts (
                id          TEXT COLLATE "C" PRIMARY KEY,
                name        TEXT COLLATE "C" NOT NULL,
                component   TEXT COLLATE "C" NOT NULL,
                content     TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                tags        TEXT NOT NULL DEFAULT '[]',
                is_default  BOOLEAN NOT NULL DEFAULT FALSE,
                created     DOUBLE PRECISION NOT NULL,
                updated     DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX prompts_component ON prompts (component)",
            # The database itself guarantees at most one default prompt per component.
            "CREATE UNIQUE INDEX prompts_one_default ON prompts (component) WHERE is_default",
        ),
    ),
)

_TEMPLATE_QUERY = """
SELECT t.id, t.name, t.description, t.category, t.current_version, v.version, v.content,
       v.variables, v.required, v.optional, v.defaults, v.metadata, t.created, t.updated
FROM templates t JOIN template_versions v ON v.template_id = t.id
"""
_PROMPT_COLUMNS = "id, name, component, content, description, tags, is_default, created, updated"
# An id is tried before a name: a template may not be named like another's id by accident.
_FIND_ID = "SELECT id FROM templates WHERE id = %s OR name = %s ORDER BY id = %s DESC LIMIT 1"


def _name_taken() -> ValidationError:
    return ValidationError("name", "already exists")


@attrs.define(eq=False)
class PostgresLibrary:
    """
    Templates and system prompts in PostgreSQL (a :class:`~rhetor.storage._library_interfaces.Library`).
    """

    db: PgDatabase
    # Seconds since the epoch; replaceable so tests can order rows exactly.
    _clock: Callable[[], float] = attrs.field(default=time.time, alias="clock")

    def broken(self) -> str | None:
        """Never: a broken connection goes back to the pool, which replaces it."""
        return None

    def close(self) -> None:
        """Nothing to release: the pool belongs to the runtime."""

    # -- templates ---------------------------------------------------------------

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
    ) -> Template:
        """
        Store a new template at version 1.

        Error handling: a taken name (also one taken by a concurrent create)
        is ``ValidationError("name", "already exists")``.
        """
        non_empty("name", name)
        check_text("description", description)
        check_text("category", category)
        fields = _VersionFields.check(content, required, optional, defaults, metadata)
        template_id = uuid.uuid4().hex
        now = self._clock()
        with self.db.transaction("written") as conn:
            if _find_id(conn, name) is not None:
                raise _name_taken()
            try:
                conn.execute(
                    "INSERT INTO templates (id, name, description, category, current_version,"
                    " created, updated) VALUES (%s, %s, %s, %s, 1, %s, %s)",
                    (template_id, pg_text(name), pg_text(description), pg_text(category), now, now),
                )
            except psycopg.errors.UniqueViolation:
                raise _name_taken() from None
            _insert_version(conn, template_id, 1, fields, now)
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
    ) -> Template:
        """
        Change a template and answer it; see the interface for what makes a new version.

        The template's row is locked while the new version is numbered, so
        concurrent updates from any process make consecutive versions.
        """
        check_text("template", id_or_name)
        if name is not None:
            non_empty("name", name)
        check_optional_text("description", description)
        check_optional_text("category", category)
        new_version = any(v is not None for v in (content, required, optional, defaults, metadata))
        now = self._clock()
        with self.db.transaction("written") as conn:
            template_id = _find_id(conn, id_or_name)
            if template_id is None:
                raise NotFound("template", id_or_name)
            # Lock first, then read in a statement of its own: its snapshot then
            # holds what the writer before us committed, its new version included.
            locked = conn.execute(
                "SELECT 1 FROM templates WHERE id = %s FOR UPDATE", (template_id,)
            ).fetchone()
            row = (
                locked
                and conn.execute(
                    _TEMPLATE_QUERY + " WHERE t.id = %s AND v.version = t.current_version",
                    (template_id,),
                ).fetchone()
            )
            if row is None:
                raise NotFound("template", id_or_name)
            current = _template(row)
            fields = _VersionFields.check(
                current.content if content is None else content,
                current.required if required is None else required,
                current.optional if optional is None else optional,
                current.defaults if defaults is None else defaults,
                current.metadata if metadata is None else metadata,
            )
            if name is not None and name != current.name:
                other = _find_id(conn, name)
                if other is not None and other != current.id:
                    raise _name_taken()
            version = current.current_version + 1 if new_version else current.current_version
            if new_version:
                _insert_version(conn, current.id, version, fields, now)
            try:
                conn.execute(
                    "UPDATE templates SET name = %s, description = %s, category = %s,"
                    " current_version = %s, updated = %s WHERE id = %s",
                    (
                        pg_text(current.name if name is None else name),
                        pg_text(current.description if description is None else description),
                        pg_text(current.category if category is None else category),
                        version,
                        now,
                        current.id,
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise _name_taken() from None
        return self.get_template(current.id)

    def get_template(self, id_or_name: str, version: int | None = None) -> Template:
        """
        A template by id or name, at its current version or the one asked for.

        Error handling: an unknown template or version raises :class:`NotFound`.
        """
        if version is not None:
            check_int("version", version, minimum=SQLITE_INT_MIN)
        check_text("template", id_or_name)
        with self.db.connection("read") as conn:
            template_id = _find_id(conn, id_or_name)
            if template_id is None:
                raise NotFound("template", id_or_name)
            if version is None:
                row = conn.execute(
                    _TEMPLATE_QUERY + " WHERE t.id = %s AND v.version = t.current_version",
                    (template_id,),
                ).fetchone()
            else:
                row = conn.execute(
                    _TEMPLATE_QUERY + " WHERE t.id = %s AND v.version = %s", (template_id, version)
                ).fetchone()
        if row is None:
            raise NotFound("template", f"{id_or_name} version {version}", field="version")
        return _template(row)

    def list_templates(self, category: str | None = None) -> list[Template]:
        """Every template at its current version, by name; optionally of one category."""
        check_optional_text("category", category)
        where = " WHERE v.version = t.current_version"
        with self.db.connection("read") as conn:
            if category is None:
                rows = conn.execute(_TEMPLATE_QUERY + where + " ORDER BY t.name").fetchall()
            else:
                rows = conn.execute(
                    _TEMPLATE_QUERY + where + " AND t.category = %s ORDER BY t.name",
                    (pg_text(category),),
                ).fetchall()
        return [_template(row) for row in rows]

    def versions(self, id_or_name: str) -> list[TemplateVersion]:
        """Every version of a template, oldest first; NotFound for an unknown template."""
        check_text("template", id_or_name)
        with self.db.connection("read") as conn:
            template_id = _find_id(conn, id_or_name)
            if template_id is None:
                raise NotFound("template", id_or_name)
            rows = conn.execute(
                "SELECT template_id, version, content, variables, required, optional, defaults,"
                " metadata, created FROM template_versions WHERE template_id = %s ORDER BY version",
                (template_id,),
            ).fetchall()
        return [_template_version(row) for row in rows]

    def delete_template(self, id_or_name: str) -> bool:
        """Delete a template and all its versions (by cascade); True if it existed."""
        check_text("template", id_or_name)
        with self.db.transaction("written") as conn:
            template_id = _find_id(conn, id_or_name)
            if template_id is None:
                return False
            conn.execute("DELETE FROM templates WHERE id = %s", (template_id,))
        return True

    def render_template(self, id_or_name: str, variables: Mapping[str, object]) -> str:
        """A template's current version filled with ``variables``."""
        return self.get_template(id_or_name).render(variables)

    # -- system prompts ------------------------------------------------------------

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
        """Store a system prompt; as the default, it displaces the component's old default."""
        non_empty("name", name)
        non_empty("component", component)
        check_text("content", content)
        check_text("description", description)
        is_default = bool(is_default)
        tags_json = _tags_json(tags)
        prompt_id = uuid.uuid4().hex
        now = self._clock()
        with self.db.transaction("written") as conn:
            if is_default:
                _clear_default(conn, component)
            conn.execute(
                f"INSERT INTO prompts ({_PROMPT_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    prompt_id,
                    pg_text(name),
                    pg_text(component),
                    pg_text(content),
                    pg_text(description),
                    tags_json,
                    is_default,
                    now,
                    now,
                ),
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
        """Change a prompt's fields; making it the default displaces its component's old one."""
        check_text("prompt_id", prompt_id)
        if name is not None:
            non_empty("name", name)
        if component is not None:
            non_empty("component", component)
        check_optional_text("content", content)
        check_optional_text("description", description)
        tags_json = None if tags is None else _tags_json(tags)
        with self.db.transaction("written") as conn:
            row = conn.execute(
                f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE id = %s FOR UPDATE",
                (pg_text(prompt_id),),
            ).fetchone()
            if row is None:
                raise NotFound("prompt", prompt_id)
            current = _prompt(row)
            new_component = current.component if component is None else component
            new_default = current.is_default if is_default is None else bool(is_default)
            if new_default:
                _clear_default(conn, new_component, keep=current.id)
            conn.execute(
                "UPDATE prompts SET name = %s, component = %s, content = %s, description = %s,"
                " tags = %s, is_default = %s, updated = %s WHERE id = %s",
                (
                    pg_text(current.name if name is None else name),
                    pg_text(new_component),
                    pg_text(current.content if content is None else content),
                    pg_text(current.description if description is None else description),
                    json.dumps(list(current.tags)) if tags_json is None else tags_json,
                    new_default,
                    self._clock(),
                    current.id,
                ),
            )
        return self.get_prompt(current.id)

    def get_prompt(self, prompt_id: str) -> Prompt:
        """A prompt by id; NotFound for an unknown id."""
        check_text("prompt_id", prompt_id)
        with self.db.connection("read") as conn:
            row = conn.execute(
                f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE id = %s",
                (pg_text(prompt_id),),
            ).fetchone()
        if row is None:
            raise NotFound("prompt", prompt_id)
        return _prompt(row)

    def list_prompts(self, component: str | None = None) -> list[Prompt]:
        """Every prompt by component then name; optionally of one component."""
        check_optional_text("component", component)
        with self.db.connection("read") as conn:
            if component is None:
                rows = conn.execute(
                    f"SELECT {_PROMPT_COLUMNS} FROM prompts ORDER BY component, name, created"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_PROMPT_COLUMNS} FROM prompts"
                    " WHERE component = %s ORDER BY name, created",
                    (pg_text(component),),
                ).fetchall()
        return [_prompt(row) for row in rows]

    def delete_prompt(self, prompt_id: str) -> bool:
        """Delete a prompt; True if it existed."""
        check_text("prompt_id", prompt_id)
        with self.db.connection("written") as conn:
            cursor = conn.execute("DELETE FROM prompts WHERE id = %s", (pg_text(prompt_id),))
            return cursor.rowcount > 0

    def default_prompt(self, component: str) -> Prompt | None:
        """The component's default prompt, or None if it has none."""
        check_text("component", component)
        with self.db.connection("read") as conn:
            row = conn.execute(
                f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE component = %s AND is_default",
                (pg_text(component),),
            ).fetchone()
        return None if row is None else _prompt(row)


def _find_id(conn: psycopg.Connection[Any], id_or_name: str) -> str | None:
    key = pg_text(id_or_name)
    row = conn.execute(_FIND_ID, (key, key, key)).fetchone()
    return None if row is None else str(row[0])


def _insert_version(
    conn: psycopg.Connection[Any],
    template_id: str,
    version: int,
    fields: _VersionFields,
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO template_versions (template_id, version, content, variables, required,"
        " optional, defaults, metadata, created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            template_id,
            version,
            pg_text(fields.content),
            json.dumps(fields.variables),
            json.dumps(fields.required),
            json.dumps(fields.optional),
            _json_text("defaults", fields.defaults),
            _json_text("metadata", fields.metadata),
            now,
        ),
    )


def _clear_default(conn: psycopg.Connection[Any], component: str, keep: str = "") -> None:
    """Under the component's lock (until commit): no other writer changes its default meanwhile."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        (PROMPT_DEFAULT_LOCKS, pg_text(component)),
    )
    conn.execute(
        "UPDATE prompts SET is_default = FALSE WHERE component = %s AND is_default AND id <> %s",
        (pg_text(component), keep),
    )

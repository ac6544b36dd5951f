"""
Prompt templates in SQLite: the template half of :class:`~rhetor.storage._library.SQLiteLibrary`.

A template has a current version and keeps every earlier one; a change to its
content or parameters adds a version, and a change to only its name,
description or category does not. Its text is checked and filled by
:mod:`rhetor.storage._rendering`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from rhetor._errors import NotFound, ValidationError
from rhetor.storage._library_interfaces import Template, TemplateVersion
from rhetor.storage._rendering import non_empty, parse_variables
from rhetor.storage._sqlite import (
    SQLITE_INT_MIN,
    check_int,
    check_optional_text,
    check_text,
    transaction,
)

__all__ = ["TemplateTables"]

_TEMPLATE_QUERY = """
SELECT t.id, t.name, t.description, t.category, t.current_version, v.version, v.content,
       v.variables, v.required, v.optional, v.defaults, v.metadata, t.created, t.updated
FROM templates t JOIN template_versions v ON v.template_id = t.id
"""


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


class TemplateTables:
    """
    The template operations of a library, over its connection and clock.

    A part of :class:`~rhetor.storage._library.SQLiteLibrary`, which owns the
    connection and creates the ``templates`` and ``template_versions`` tables.
    """

    __slots__ = ()
    _conn: sqlite3.Connection
    _clock: Callable[[], float]

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

        Error handling: a taken name raises ``ValidationError("name", "already exists")``.
        """
        non_empty("name", name)
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
    ) -> Template:
        """
        Change a template and return it.

        A change to content, required, optional, defaults or metadata makes a
        new version (unchanged fields carry over); a change to only the name,
        description or category does not.
        """
        current = self.get_template(id_or_name)
        now = self._clock()
        new_version = any(v is not None for v in (content, required, optional, defaults, metadata))
        if name is not None:
            non_empty("name", name)
        check_optional_text("description", description)
        check_optional_text("category", category)
        with transaction(self._conn) as conn:
            # Read again under the write lock: another connection may have added a version.
            current = self.get_template(current.id)
            fields = _VersionFields.check(
                current.content if content is None else content,
                current.required if required is None else required,
                current.optional if optional is None else optional,
                current.defaults if defaults is None else defaults,
                current.metadata if metadata is None else metadata,
            )
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
        check_optional_text("category", category)
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

"""
Template text and prompt drafts: pure functions, no storage.

Templates use Python format syntax: ``{name}`` is a variable and ``{{``/``}}``
are literal braces. Only bare names are allowed: attribute or index access and
format specs are rejected, so rendering can never reach into a value's
attributes. :func:`parse_variables` reads a template's variables and
:func:`render` fills them.

:func:`generate_prompt` drafts a structured prompt for a task in one of a few
formats (:data:`PROMPT_FORMATS`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

from rhetor._errors import ValidationError
from rhetor.storage._sqlite import check_text

__all__ = ["PROMPT_FORMATS", "generate_prompt", "non_empty", "parse_variables", "render"]

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


def non_empty(field: str, value: object) -> str:
    """Return ``value`` if it is a string with more than whitespace SQLite can store; else ValidationError(field)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string")
    return check_text(field, value)


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
    task = non_empty("task", task).strip()
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

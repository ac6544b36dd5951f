"""
The schemas of Rhetor's other routes: templates, prompts, contexts, budget and evaluate.

One class per body and per query string. Template and prompt bodies refuse
an unknown field (:class:`~rhetor.edge._schema.Closed`), as the store would;
the others ignore it. A body's :meth:`given` is what it sets: the fields the
client sent, null ones left out, as the runtime's update calls take them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from rhetor._settings import BudgetPolicy
from rhetor.budget import BudgetStatus, UsageTotals
from rhetor.budget._messages import ENTRIES_LIMIT
from rhetor.budget._rules import Period
from rhetor.edge._fields import MAX_INT
from rhetor.edge._schema import Body, Closed, NonEmpty, PositiveInt, Query, QueryCount
from rhetor.edge._schemas_native import ChatTurn
from rhetor.storage import ContextInfo, Prompt, SearchHit, StoredMessage, Template, TemplateVersion

__all__ = [
    "BudgetLimitBody",
    "BudgetPolicyBody",
    "BudgetReply",
    "ContextList",
    "ContextQuery",
    "ContextReply",
    "ContextsQuery",
    "DeletedReply",
    "EntriesQuery",
    "EstimateBody",
    "EvaluateBody",
    "GeneratePromptBody",
    "GeneratedPrompt",
    "GroupBy",
    "PromptBody",
    "PromptFormat",
    "PromptList",
    "PromptUpdateBody",
    "PromptsQuery",
    "RenderBody",
    "RenderReply",
    "SearchQuery",
    "SearchReply",
    "TemplateBody",
    "TemplateList",
    "TemplateQuery",
    "TemplateUpdateBody",
    "TemplateVersionsReply",
    "TemplatesQuery",
    "UsageQuery",
    "UsageReply",
    "given",
]

# The ways POST /prompts/generate can draft a prompt (rhetor.storage._rendering.PROMPT_FORMATS).
PromptFormat = Literal["instruction", "chat", "few_shot", "chain_of_thought", "structured"]
# What GET /budget/usage groups spend by.
GroupBy = Literal["provider", "model", "component", "context"]
# A whole-number query parameter from 1.
_QueryPositive = Annotated[int, Meta(ge=1, le=MAX_INT)]


def given(body: msgspec.Struct) -> dict[str, Any]:
    """The fields of ``body`` the client set (null and absent ones left out)."""
    return {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}


# -- templates -------------------------------------------------------------------------


class TemplateBody(Closed, frozen=True, kw_only=True):
    """
    A new template (``POST /templates``): ``{name}`` placeholders in ``content``.
    """

    name: NonEmpty
    content: NonEmpty
    description: str | None = None
    category: str | None = None
    required: Annotated[list[str], Meta(description="Variables a render must give.")] | None = None
    optional: Annotated[list[str], Meta(description="Variables a render may leave out.")] | None = (
        None
    )
    defaults: (
        Annotated[dict[str, Any], Meta(description="Values of variables a render leaves out.")]
        | None
    ) = None
    metadata: dict[str, Any] | None = None


class TemplateUpdateBody(Closed, frozen=True, kw_only=True):
    """
    A change to a template (``PUT /templates/{id}``); a new content or parameter makes a new version.
    """

    name: str | None = None
    content: str | None = None
    description: str | None = None
    category: str | None = None
    required: list[str] | None = None
    optional: list[str] | None = None
    defaults: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class RenderBody(Body, frozen=True, kw_only=True):
    """
    The variables to render a template with (``POST /templates/{id}/render``).
    """

    variables: dict[str, Any] | None = None


class TemplatesQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /templates``: only those of a category.
    """

    category: str | None = None


class TemplateQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /templates/{id}``: a given version (default the current one).
    """

    version: _QueryPositive | None = None


# -- prompts ---------------------------------------------------------------------------


class PromptBody(Closed, frozen=True, kw_only=True):
    """
    A new system prompt for a component (``POST /prompts``).
    """

    name: NonEmpty
    component: NonEmpty
    content: NonEmpty
    description: str | None = None
    tags: list[str] | None = None
    is_default: (
        Annotated[bool, Meta(description="Make it the component's default prompt.")] | None
    ) = None


class PromptUpdateBody(Closed, frozen=True, kw_only=True):
    """
    A change to a system prompt (``PUT /prompts/{id}``).
    """

    name: NonEmpty | None = None
    component: NonEmpty | None = None
    content: NonEmpty | None = None
    description: str | None = None
    tags: list[str] | None = None
    is_default: bool | None = None


class GeneratePromptBody(Body, frozen=True, kw_only=True):
    """
    Draft a system prompt for a task (``POST /prompts/generate``).
    """

    task: NonEmpty
    context: dict[str, Any] | str | None = None
    format: Annotated[PromptFormat, Meta(description="Default instruction.")] | None = None


class PromptsQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /prompts``: only those of a component.
    """

    component: str | None = None


# -- contexts --------------------------------------------------------------------------


class ContextsQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /contexts``: one page of contexts, most recently updated first.
    """

    limit: _QueryPositive = 100
    offset: QueryCount = 0


class SearchQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /contexts/search``: messages that mention ``q``.
    """

    q: NonEmpty
    limit: _QueryPositive = 20


class ContextQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /contexts/{id}``: its newest ``limit`` messages (default all).
    """

    limit: _QueryPositive | None = None


# -- budget ----------------------------------------------------------------------------


class BudgetLimitBody(Body, frozen=True, kw_only=True):
    """
    Set a spending limit (``POST /budget/limit``); 0 removes it.
    """

    period: Period
    limit: Annotated[float, Meta(ge=0, description="USD per period; 0 removes the limit.")]
    provider: (
        Annotated[str, Meta(description="Limit this provider alone; default all together.")] | None
    ) = None
    component: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=200,
                description=(
                    "Limit the requests of this component alone (the request's `component`);"
                    " not with `provider`."
                ),
            ),
        ]
        | None
    ) = None


class BudgetPolicyBody(Body, frozen=True, kw_only=True):
    """
    What a limit does (``POST /budget/policy``): nothing, warn, or refuse.
    """

    policy: BudgetPolicy


class EstimateBody(Body, frozen=True, kw_only=True):
    """
    Estimate a request's cost before sending it (``POST /budget/estimate``): a prompt or messages.
    """

    prompt: str | None = None
    messages: Annotated[list[ChatTurn], Meta(min_length=1)] | None = None
    model: str | None = None
    task_type: str | None = None
    task: Annotated[str, Meta(description="Another spelling of task_type.")] | None = None
    max_tokens: PositiveInt | None = None


class UsageQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /budget/usage``: spend in the current period, grouped.
    """

    period: Period = "daily"
    group_by: GroupBy = "provider"


class EntriesQuery(Query, frozen=True, kw_only=True):
    """
    ``GET /budget/entries``: the latest charges, newest first.
    """

    limit: Annotated[int, Meta(ge=1, le=ENTRIES_LIMIT)] = 50
    since: Annotated[
        float, Meta(ge=0, le=1e11, description="A unix timestamp (seconds); 0 means all.")
    ] = 0.0


# -- evaluate --------------------------------------------------------------------------


class EvaluateBody(Body, frozen=True, kw_only=True):
    """
    Score a response to a prompt (``POST /evaluate``).
    """

    prompt: NonEmpty
    response: NonEmpty
    criteria: (
        Annotated[
            list[NonEmpty],
            Meta(description="Default accuracy, clarity and relevance."),
        ]
        | None
    ) = None


# -- replies ---------------------------------------------------------------------------

# The stores' own values (attrs classes and TypedDicts: Template, Prompt, ContextInfo,
# BudgetStatus, ...) are what the routes answer, so they document themselves.


class DeletedReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    What a DELETE answers.
    """

    deleted: bool
    id: str


class TemplateList(msgspec.Struct, frozen=True, kw_only=True):
    """
    Templates, each at its current version.
    """

    templates: list[Template]


class RenderReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    A rendered template.
    """

    template: str
    rendered: str


class TemplateVersionsReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    Every version of a template, oldest first.
    """

    template: str
    versions: list[TemplateVersion]


class PromptList(msgspec.Struct, frozen=True, kw_only=True):
    """
    System prompts.
    """

    prompts: list[Prompt]


class GeneratedPrompt(msgspec.Struct, frozen=True, kw_only=True):
    """
    A drafted system prompt.
    """

    prompt: str
    task: str
    format: PromptFormat


class ContextList(msgspec.Struct, frozen=True, kw_only=True):
    """
    One page of contexts.
    """

    contexts: list[ContextInfo]


class ContextReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    A context and its messages, oldest first.
    """

    info: ContextInfo
    messages: list[StoredMessage]


class SearchReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    The messages that mention the query, with the text around each match.
    """

    query: str
    results: list[SearchHit]


class UsageReply(msgspec.Struct, frozen=True, kw_only=True):
    """
    Spend in the current period, one row per group.
    """

    period: Period
    group_by: GroupBy
    usage: list[UsageTotals]


# What GET /budget, POST /budget/limit and POST /budget/policy answer.
BudgetReply = BudgetStatus

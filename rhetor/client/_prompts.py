"""
The prompt client the seeds reach with ``await get_rhetor_prompt_client()``.

A thin face over :class:`RhetorClient` for prompt engineering: generated
prompts, templates and per-component system prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio

from rhetor.client._errors import ServerError
from rhetor.client._http import RhetorClient, _object

__all__ = ["PromptClient", "get_rhetor_prompt_client"]


class PromptClient:
    """
    Prompts, templates and system prompts on one Rhetor server.

    Error handling: every method raises a :class:`~rhetor.client.RhetorClientError`.
    """

    def __init__(self, client: RhetorClient) -> None:
        #: The underlying client, for LLM calls on the same connection.
        self.client = client

    async def generate_prompt(
        self,
        task: str,
        context: Mapping[str, Any] | str | None = None,
        format: str = "instruction",
    ) -> dict[str, Any]:
        """A prompt built for ``task`` with ``context``; the dict's ``prompt`` holds it."""
        body: dict[str, Any] = {"task": task, "format": format}
        if context is not None:
            body["context"] = context if isinstance(context, str) else dict(context)
        return _object(await self.client.request("POST", "/prompts/generate", json=body), "prompt")

    async def create_prompt_template(
        self,
        name: str,
        template: str,
        variables: Sequence[str] | None = None,
        description: str = "",
        *,
        category: str | None = None,
    ) -> dict[str, Any]:
        """
        Store a template; ``variables`` are its required placeholders.

        Answers the stored template, with its id under both ``id`` and ``template_id``.
        """
        body: dict[str, Any] = {"name": name, "content": template, "description": description}
        if variables is not None:
            body["required"] = list(variables)
        if category is not None:
            body["category"] = category
        created = _object(await self.client.request("POST", "/templates", json=body), "template")
        template_id = created.get("template_id", created.get("id"))
        if not isinstance(template_id, str):
            raise ServerError("Rhetor's template answer has no id")
        return {**created, "template_id": template_id}

    async def render_prompt(self, template_id: str, variables: Mapping[str, Any]) -> str:
        """Template ``template_id`` (id or name) filled with ``variables``."""
        return await self.client.render_template(template_id, variables)

    async def create_prompt(
        self,
        name: str,
        component: str,
        content: str,
        description: str = "",
        tags: Sequence[str] = (),
        is_default: bool = False,
    ) -> dict[str, Any]:
        """
        Store a system prompt for ``component``; as the default it replaces the old one.

        Answers the stored prompt, with its id under both ``id`` and ``prompt_id``.
        """
        body = {
            "name": name,
            "component": component,
            "content": content,
            "description": description,
            "tags": list(tags),
            "is_default": is_default,
        }
        created = _object(await self.client.request("POST", "/prompts", json=body), "prompt")
        prompt_id = created.get("prompt_id", created.get("id"))
        return {**created, "prompt_id": prompt_id}

    async def get_prompts(self, component: str | None = None) -> Any:
        """The stored system prompts, of one component or all."""
        params = {"component": component} if component else None
        return await self.client.request("GET", "/prompts", params=params)

    async def delete_prompt(self, prompt_id: str) -> None:
        """Delete a system prompt."""
        await self.client.request("DELETE", f"/prompts/{quote(prompt_id, safe='')}")

    async def close(self) -> None:
        """Close the connection."""
        await self.client.close()

    async def __aenter__(self) -> PromptClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def get_rhetor_prompt_client(
    host: str | None = None,
    port: int | str | None = None,
    api_key: str | None = None,
    *,
    timeout: float | None = None,
) -> PromptClient:
    """
    Connect to Rhetor (``RHETOR_HOST``/``RHETOR_PORT``/``RHETOR_API_KEY`` by default)
    and answer a :class:`PromptClient`; close it when done.

    Error handling: a server that does not answer raises
    :class:`~rhetor.client.ConnectionRefused` here, not on first use.
    """
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    client = RhetorClient(host, port, api_key, **options)
    try:
        await client.health()
    except BaseException:
        # Awaited cleanup under a shield: we may be here because we were cancelled.
        with anyio.CancelScope(shield=True):
            await client.close()
        raise
    return PromptClient(client)

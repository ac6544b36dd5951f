"""Task routing: rules, overrides, routing parameters and fallback chains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rhetor._content import Image, Passthrough, ResponseFormat, Text, Tool, ToolCall, ToolChoice
from rhetor._errors import NotFound, ValidationError
from rhetor._types import ChatMessage, LLMRequest, RoutingParameters
from rhetor.routing._needs import Need, lacking, needs_of
from rhetor.routing._plan import TaskConfig, plan, usd

CONFIG = TaskConfig.load(Path(__file__).parent.parent / "config" / "tasks.json")
MODELS = {
    p: [n for n, i in CONFIG.models.items() if i.provider == p]
    for p in ("anthropic", "openai", "ollama", "simulated")
}
PRICES = {"high": 1.0, "medium": 0.5, "low": 0.1, "local": 0.0}


def run(
    *,
    task_type: str = "chat",
    component: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    params: RoutingParameters | None = None,
    up: tuple[str, ...] = ("anthropic", "openai", "simulated"),
    active: tuple[str, str] | None = None,
    simulated_fallback: bool = False,
    needs: tuple[Need, ...] = (),
):  # type: ignore[no-untyped-def]
    return plan(
        CONFIG,
        task_type=task_type,
        component=component,
        provider=provider,
        model=model,
        temperature=None,
        params=params or RoutingParameters(),
        available=lambda p: p in up,
        provider_models=MODELS,
        active=active,
        simulated_fallback=simulated_fallback,
        cost_of=lambda p, m: PRICES[CONFIG.models[m].tier] if m in CONFIG.models else 0.0,
        needs=needs,
        family_of=lambda p: p,
    )


def test_default_config_maps_every_task_to_primary_and_fallback() -> None:
    """The shipped tasks.json routes code, planning, reasoning, chat and default as the seeds do."""
    assert CONFIG.tasks["code"].chain == ("claude-3-opus-20240229", "gpt-4-turbo")
    assert CONFIG.tasks["chat"].chain == ("claude-3-haiku-20240307", "gpt-3.5-turbo")
    for task in ("planning", "reasoning", "default"):
        assert CONFIG.tasks[task].chain == ("claude-3-sonnet-20240229", "gpt-4o")


def test_unknown_task_type_falls_to_default_and_says_so() -> None:
    """An unknown task type is routed as 'default', with the reason in the explanation."""
    result = run(task_type="poetry")
    assert result.task_type == "default"
    assert result.candidates[0].model == "claude-3-sonnet-20240229"
    assert "unknown task type 'poetry'" in result.explanation


def test_component_rule_wins_over_task() -> None:
    """A {component}_{task} rule is used before the task's own route."""
    result = run(task_type="code", component="ergon")
    assert result.rule == "ergon_code"
    assert [c.model for c in result.candidates] == ["claude-3-opus-20240229", "gpt-4o"]


def test_component_without_rule_uses_task() -> None:
    """A component with no rule of its own gets the task's route."""
    assert run(task_type="code", component="hermes").rule == "code"


def test_unavailable_provider_is_skipped_and_explained() -> None:
    """With Anthropic down, the OpenAI fallback heads the list, and the explanation says why."""
    result = run(up=("openai",))
    assert [c.model for c in result.candidates] == ["gpt-3.5-turbo"]
    assert "skipped unavailable anthropic/claude-3-haiku-20240307" in result.explanation


def test_simulated_joins_the_chain_only_as_fallback_of_last_resort() -> None:
    """With no real provider up, the simulated provider answers, and says so."""
    result = run(up=("simulated",), simulated_fallback=True)
    assert [c.provider for c in result.candidates] == ["simulated"]
    assert "no real provider is available" in result.explanation


def test_explicit_model_overrides_routing() -> None:
    """A request naming a model goes to that model's provider alone."""
    result = run(model="gpt-4o")
    assert [(c.provider, c.model) for c in result.candidates] == [("openai", "gpt-4o")]
    assert "requested explicitly" in result.explanation


def test_unknown_provider_is_not_found_naming_the_field() -> None:
    """An unknown provider gives a typed NotFound naming 'provider'."""
    with pytest.raises(NotFound) as info:
        run(provider="nope")
    assert info.value.field == "provider"


def test_unknown_model_is_not_found_naming_the_field() -> None:
    """An unknown model gives a typed NotFound naming 'model'."""
    with pytest.raises(NotFound) as info:
        run(model="gpt-99")
    assert info.value.field == "model"


def test_required_capabilities_filter_the_chain() -> None:
    """A chat request that needs code generation skips models that lack it."""
    params = RoutingParameters(required_capabilities=frozenset({"code_generation"}))
    models = [c.model for c in run(params=params).candidates]
    assert models and all("code_generation" in CONFIG.models[m].capabilities for m in models)


def test_low_complexity_prefers_cheaper_models() -> None:
    """Low complexity orders the chain from the cheapest tier up."""
    params = RoutingParameters(complexity="low")
    models = [c.model for c in run(task_type="code", params=params).candidates]
    assert models[0] == "gpt-4-turbo" or CONFIG.models[models[0]].tier <= "high"
    high = [
        c.model
        for c in run(task_type="code", params=RoutingParameters(complexity="high")).candidates
    ]
    assert CONFIG.models[high[0]].tier == "high"


def test_max_cost_drops_models_that_cost_more() -> None:
    """A max cost keeps only candidates whose worst case fits, adding cheaper ones."""
    params = RoutingParameters(max_cost=0.2)
    models = [c.model for c in run(task_type="code", params=params).candidates]
    assert models and all(PRICES[CONFIG.models[m].tier] <= 0.2 for m in models)


def test_active_model_heads_the_default_chain() -> None:
    """The operator's active model is tried first for default-task requests."""
    result = run(task_type="default", active=("openai", "gpt-4o"))
    assert result.candidates[0].model == "gpt-4o"


def test_routing_parameters_validate_each_field() -> None:
    """Bad routing parameters are rejected naming the exact field."""
    with pytest.raises(ValidationError) as info:
        RoutingParameters.from_dict({"complexity": "extreme"})
    assert info.value.field == "routing_parameters.complexity"
    with pytest.raises(ValidationError) as info:
        RoutingParameters.from_dict({"max_cost": -1})
    assert info.value.field == "routing_parameters.max_cost"
    assert RoutingParameters.from_dict({"task_type": "coding"}) == RoutingParameters()


def test_config_naming_an_unlisted_model_is_rejected(tmp_path: Path) -> None:
    """A task route that names a model missing from 'models' is a clear config error."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"tasks": {"default": {"primary": "ghost"}}, "models": {}}))
    with pytest.raises(ValidationError, match="ghost"):
        TaskConfig.load(path)


def test_config_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    """A broken tasks.json names the variable that points at it."""
    path = tmp_path / "tasks.json"
    path.write_text("{nope")
    with pytest.raises(ValidationError) as info:
        TaskConfig.load(path)
    assert info.value.field == "RHETOR_TASK_CONFIG"


def test_routing_parameters_never_add_the_simulated_echo_while_a_real_provider_is_up() -> None:
    """Capability and cost filters choose among real models only: the free echo claims every capability."""
    for params in (
        RoutingParameters(required_capabilities=frozenset({"storytelling"})),
        RoutingParameters(max_cost=0.05),
        RoutingParameters(complexity="low", max_cost=0.2),
    ):
        result = run(
            task_type="code", params=params, up=("anthropic", "openai", "ollama", "simulated")
        )
        assert result.candidates, params
        assert all(c.provider != "simulated" for c in result.candidates), params


def test_unmet_routing_parameters_are_a_validation_error_naming_the_parameter() -> None:
    """No real model meeting the parameters is a 422 naming the field and the models considered."""
    debugging = frozenset({"debugging"})
    with pytest.raises(ValidationError) as info:
        run(params=RoutingParameters(required_capabilities=debugging, max_cost=0.5))
    assert info.value.field == "routing_parameters.max_cost"
    assert "(considered claude-3-opus-20240229 $1, gpt-4-turbo $1)" in info.value.message
    with pytest.raises(ValidationError) as info:
        run(params=RoutingParameters(required_capabilities=frozenset({"telepathy"})))
    assert info.value.field == "routing_parameters.required_capabilities"
    assert "gpt-4o" in info.value.message and "simulated-echo" not in info.value.message


def test_with_no_real_provider_up_the_simulated_provider_answers_unmet_parameters() -> None:
    """When only the simulated provider is up, it answers whatever the parameters ask."""
    params = RoutingParameters(required_capabilities=frozenset({"telepathy"}), max_cost=0.0)
    result = run(params=params, up=("simulated",), simulated_fallback=True)
    assert [c.model for c in result.candidates] == ["simulated-echo"]
    assert "no real model has all of telepathy" in result.explanation


def test_a_model_whose_provider_is_down_is_kept_as_skipped() -> None:
    """Planned models of a provider that is down are listed in the plan's skipped candidates."""
    result = run(up=("openai",))
    assert [(c.provider, c.model) for c in result.skipped] == [
        ("anthropic", "claude-3-haiku-20240307")
    ]
    # Only the free local model fits, and Ollama is down: it is skipped, not dropped.
    cheap = run(params=RoutingParameters(max_cost=0.05))
    assert cheap.candidates == ()
    assert [c.model for c in cheap.skipped] == ["llama3"]


def test_an_explicit_model_is_pinned_and_must_meet_the_parameters() -> None:
    """A named model is the one pinned candidate; parameters it does not meet are a 422, not a swap."""
    result = run(model="claude-3-opus-20240229")
    assert result.pinned == "model"
    with pytest.raises(ValidationError) as info:
        run(model="claude-3-opus-20240229", params=RoutingParameters(max_cost=0.5))
    assert info.value.field == "routing_parameters.max_cost"
    assert "anthropic/claude-3-opus-20240229 was requested explicitly" in info.value.message
    with pytest.raises(ValidationError) as info:
        run(
            model="gpt-3.5-turbo",
            params=RoutingParameters(required_capabilities=frozenset({"debugging"})),
        )
    assert info.value.field == "routing_parameters.required_capabilities"


def test_an_explicit_provider_picks_its_first_model_that_meets_the_parameters() -> None:
    """A named provider alone means its first fitting model, pinned to that provider."""
    assert run(provider="anthropic").candidates[0].model == "claude-3-opus-20240229"
    cheap = run(provider="anthropic", params=RoutingParameters(max_cost=0.2))
    assert [c.model for c in cheap.candidates] == ["claude-3-haiku-20240307"]
    assert cheap.pinned == "provider"
    with pytest.raises(ValidationError) as info:
        run(provider="anthropic", params=RoutingParameters(max_cost=0.01))
    assert info.value.field == "routing_parameters.max_cost"
    assert "no model of anthropic" in info.value.message


def test_costs_in_messages_have_enough_decimals_and_no_float_noise() -> None:
    """usd() keeps six decimals at most and drops trailing zeros."""
    assert [usd(x) for x in (0.1 + 0.2, 0.0775500001, 1.5e-05, 0.0, 2.0)] == [
        "$0.3",
        "$0.07755",
        "$0.000015",
        "$0",
        "$2",
    ]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"required_capabilities": True}, "required_capabilities"),
        ({"required_capabilities": {"code": 1}}, "required_capabilities"),
        ({"required_capabilities": "code"}, "required_capabilities"),
        ({"required_capabilities": [1]}, "required_capabilities"),
        ({"max_cost": 10**400}, "max_cost"),
        ({"max_cost": float("nan")}, "max_cost"),
        ({"max_cost": float("inf")}, "max_cost"),
        ({"max_cost": "0.1"}, "max_cost"),
        ({"complexity": ["low"]}, "complexity"),
    ],
)
def test_hostile_routing_parameters_are_validation_errors_naming_the_field(
    raw: dict[str, object], field: str
) -> None:
    """Wrong types, huge integers and non-finite costs are typed errors, never a TypeError or OverflowError."""
    with pytest.raises(ValidationError) as info:
        RoutingParameters.from_dict(raw)
    assert info.value.field == f"routing_parameters.{field}"


# -- what a request needs ------------------------------------------------------------------

TOOLS = Need("tools", "tools")
VISION = Need("vision", "messages")
SCHEMA = Need("json_schema", "response_format")
IMAGE_URL = Need("image_url", "messages", model_level=False)
OPENAI_PARAMS = Need("family:openai", "logit_bias", model_level=False)


def test_the_shipped_catalogue_states_tools_vision_and_json_capabilities() -> None:
    """config/tasks.json says which models use tools, see images and hold to a JSON schema."""
    assert {"tools", "vision"} <= CONFIG.models["gpt-4o"].capabilities
    assert "json_schema" in CONFIG.models["gpt-4o"].capabilities
    assert "vision" not in CONFIG.models["gpt-3.5-turbo"].capabilities
    assert "tools" not in CONFIG.models["llama3"].capabilities
    assert CONFIG.models["claude-3-haiku-20240307"].context_window == 200000


def test_a_model_lacking_what_the_request_needs_is_skipped_and_explained() -> None:
    """An image skips the chat task's text-only fallback, and the explanation says so."""
    result = run(task_type="chat", needs=(VISION,))
    assert [c.model for c in result.candidates] == ["claude-3-haiku-20240307"]
    assert "skipped openai/gpt-3.5-turbo (no image input)" in result.explanation


def test_when_no_candidate_has_it_the_request_is_refused_naming_the_field_and_models() -> None:
    """A JSON schema no chat model holds to is a ValidationError on response_format listing the models."""
    with pytest.raises(ValidationError) as caught:
        run(task_type="chat", needs=(SCHEMA,))
    assert caught.value.field == "response_format"
    assert "anthropic/claude-3-haiku-20240307" in caught.value.message
    assert "openai/gpt-3.5-turbo" in caught.value.message


def test_with_the_simulated_fallback_an_unmet_need_leaves_it_to_answer() -> None:
    """No real provider up: the simulated provider (which has everything) answers instead."""
    result = run(task_type="chat", needs=(SCHEMA,), up=("simulated",), simulated_fallback=True)
    assert [c.provider for c in result.candidates] == ["simulated"]
    assert "no real model has JSON schema output" in result.explanation


def test_an_explicit_model_lacking_a_need_is_refused() -> None:
    """A named model is never swapped: lacking vision, it is a 400 on messages naming it."""
    with pytest.raises(ValidationError) as caught:
        run(model="gpt-3.5-turbo", needs=(VISION,))
    assert caught.value.field == "messages" and "openai/gpt-3.5-turbo" in caught.value.message


def test_a_model_the_catalogue_does_not_list_is_taken_at_its_word_unless_rhetor_chooses() -> None:
    """Unlisted: named explicitly it may have anything; chosen among a provider's models, nothing."""
    assert lacking((VISION, IMAGE_URL), "openai", "openai", None) is None
    assert lacking((VISION,), "openai", "openai", None, known=True) == VISION
    assert lacking((IMAGE_URL,), "ollama", "ollama", None) == IMAGE_URL
    assert lacking((OPENAI_PARAMS,), "custom", "", None) == OPENAI_PARAMS
    assert lacking((IMAGE_URL,), "custom", "", None) is None
    assert lacking((OPENAI_PARAMS, VISION), "simulated", "simulated", frozenset()) is None
    assert (
        lacking((Need("json_mode", "response_format"),), "p", "", frozenset({"json_schema"}))
        is None
    )


def test_an_explicit_provider_picks_its_first_model_that_has_the_need() -> None:
    """provider=openai with an image picks gpt-4-turbo over the text-only models listed before it."""
    result = run(provider="openai", needs=(VISION, TOOLS))
    assert result.candidates[0].model == "gpt-4-turbo"
    with pytest.raises(ValidationError) as caught:
        run(provider="ollama", needs=(TOOLS,), up=("ollama",))
    assert caught.value.field == "tools" and "llama3" in caught.value.message


def test_family_features_and_parameters_are_needs_of_the_provider() -> None:
    """Image URLs keep Ollama out; an OpenAI client's own parameters keep every other family out."""
    with pytest.raises(ValidationError) as caught:
        run(model="llama3", needs=(IMAGE_URL,))
    assert caught.value.field == "messages" and "images given by URL" in caught.value.message
    result = run(task_type="default", needs=(OPENAI_PARAMS,))
    assert [c.provider for c in result.candidates] == ["openai"]
    assert "openai's own parameters" in result.explanation
    with pytest.raises(ValidationError) as refused:
        run(model="claude-3-haiku-20240307", needs=(OPENAI_PARAMS,))
    assert refused.value.field == "logit_bias"


def test_a_bad_context_window_or_capability_list_is_refused_at_load() -> None:
    """tasks.json: context_window a positive whole number, capabilities a list of strings."""
    base = {"tasks": {"default": {"primary": "m"}}, "models": {"m": {"provider": "p"}}}
    for bad, field in (
        ({"context_window": 0}, "models.m.context_window"),
        ({"context_window": "big"}, "models.m.context_window"),
        ({"capabilities": "tools"}, "models.m.capabilities"),
    ):
        raw = json.loads(json.dumps(base))
        raw["models"]["m"].update(bad)
        with pytest.raises(ValidationError) as caught:
            TaskConfig.from_dict(raw)
        assert caught.value.field == field
    assert TaskConfig.from_dict(base).models["m"].context_window is None


def test_what_a_request_needs_is_read_from_its_fields_and_conversation() -> None:
    """Tools (forced or not), tool blocks, images (by URL or not), formats, untranslatable parameters."""
    tool = Tool("f")
    image = ChatMessage("user", blocks=(Text("x"), Image(url="https://e/x.png")))
    request = LLMRequest(
        message="x",
        tools=[tool],
        tool_choice=ToolChoice("required"),
        response_format=ResponseFormat("json_object"),
        passthrough=Passthrough("openai", {"store": True, "logprobs": True}),
    )
    assert needs_of(request, (image,)) == (
        TOOLS,
        Need("forced_tool_choice", "tool_choice", model_level=False),
        VISION,
        IMAGE_URL,
        Need("json_mode", "response_format"),
        Need("family:openai", "logprobs", model_level=False),
    )
    history = (ChatMessage("assistant", blocks=(ToolCall("c", "f"),)),)
    assert needs_of(LLMRequest(message="x"), history) == (Need("tools", "messages"),)
    harmless = LLMRequest(message="x", passthrough=Passthrough("openai", {"store": True}))
    assert needs_of(harmless, ()) == ()
    assert needs_of(LLMRequest(message="x", tools=[tool], tool_choice=ToolChoice("none")), ()) == ()

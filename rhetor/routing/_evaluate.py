"""
Evaluating a response to a prompt: the request a model is asked, and reading its answer.

The model is asked for JSON scores; an answer that is not such JSON falls
back to a lexical heuristic, and the result says which one scored it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from rhetor._types import LLMRequest, Reply

__all__ = ["DEFAULT_CRITERIA", "evaluation", "evaluation_request"]

DEFAULT_CRITERIA = ("accuracy", "clarity", "relevance")

_JSON = re.compile(r"\{.*\}", re.DOTALL)
_WORD = re.compile(r"[a-z0-9]+")


def evaluation_request(prompt: str, response: str, criteria: Sequence[str]) -> LLMRequest:
    """The request that asks a reasoning model to score ``response`` against ``criteria``."""
    instruction = (
        "Evaluate the response to the prompt. Score each criterion from 0 to 10 and answer "
        'with JSON only: {"scores": {"<criterion>": <number>}, "overall_score": <number>, '
        '"feedback": "<text>"}.\n'
        f"Criteria: {', '.join(criteria)}\n\nPrompt:\n{prompt}\n\nResponse:\n{response}"
    )
    return LLMRequest(
        message=instruction, task_type="reasoning", component="rhetor", max_tokens=512
    )


def evaluation(prompt: str, response: str, criteria: Sequence[str], reply: Reply) -> dict[str, Any]:
    """The evaluation a model's ``reply`` gives, or the heuristic's when it is not JSON scores."""
    parsed = _parse_evaluation(reply.message, criteria)
    if parsed is not None:
        scores, overall, feedback = parsed
        method = "model"
    else:
        scores = _heuristic_scores(prompt, response, criteria)
        overall = round(sum(scores.values()) / len(scores), 2)
        feedback = (
            "The model's answer was not a JSON evaluation, so these scores come from "
            "Rhetor's lexical heuristic (relevance by word overlap, clarity by sentence "
            f"length, completeness by length). Model said: {reply.message[:200]}"
        )
        method = "heuristic"
    return {
        "evaluation": {
            "overall_score": overall,
            "scores": scores,
            "feedback": feedback,
            "method": method,
        },
        "model": reply.model,
        "provider": reply.provider,
        "cost": reply.cost,
    }


def _parse_evaluation(
    text: str, criteria: Sequence[str]
) -> tuple[dict[str, float], float, str] | None:
    match = _JSON.search(text)
    if match is None:
        return None
    try:
        raw = json.loads(match.group(0))
        scores = {c: max(0.0, min(10.0, float(raw["scores"][c]))) for c in criteria}
        overall = raw.get("overall_score")
        overall = float(overall) if overall is not None else sum(scores.values()) / len(scores)
        return scores, max(0.0, min(10.0, overall)), str(raw.get("feedback", ""))
    except (ValueError, KeyError, TypeError):
        return None


def _heuristic_scores(prompt: str, response: str, criteria: Sequence[str]) -> dict[str, float]:
    prompt_words = set(_WORD.findall(prompt.lower()))
    response_words = _WORD.findall(response.lower())
    overlap = len(prompt_words & set(response_words)) / max(1, len(prompt_words))
    sentences = max(1, len(re.findall(r"[.!?]+", response)) or 1)
    avg_len = len(response_words) / sentences
    clarity = 10.0 - min(6.0, abs(avg_len - 18) / 3)
    completeness = min(10.0, len(response_words) / 10)
    relevance = min(10.0, 2 + overlap * 8)
    base = {"relevance": relevance, "clarity": clarity, "completeness": completeness}
    scores = {}
    for criterion in criteria:
        value = base.get(criterion, (relevance + clarity + completeness) / 3)
        scores[criterion] = round(max(0.0, min(10.0, value)), 2)
    return scores

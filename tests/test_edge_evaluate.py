"""Tests for the evaluate blueprint (rhetor/edge/_evaluate.py)."""

from __future__ import annotations

from pathlib import Path

from tests.edge_helpers import served


async def test_evaluate_answers_an_overall_score_and_feedback(tmp_path: Path) -> None:
    """POST /evaluate answers overall_score from 0 to 10, scores and feedback."""
    async with served(tmp_path) as (_, client):
        body = (
            await client.post(
                "/evaluate",
                json={"prompt": "Name a colour.", "response": "Blue.", "criteria": ["relevance"]},
            )
        ).json()
    assert 0 <= body["evaluation"]["overall_score"] <= 10
    assert set(body["evaluation"]["scores"]) == {"relevance"}
    assert body["evaluation"]["feedback"]

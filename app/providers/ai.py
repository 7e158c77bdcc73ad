"""Client for an OpenAI-compatible chat completions API that scores leads."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel, Field

from app.providers.errors import MalformedResponse
from app.providers.http import ProviderClient
from app.storable import StorableStr

PROVIDER = "ai"


class Score(BaseModel):
    """A lead's score from 1 (cold) to 4 (ready to buy), with the model's reason."""

    score: int = Field(ge=1, le=4)
    reason: StorableStr


class AiClient(ProviderClient):
    """Asks the model for a JSON score with one shared httpx client."""

    provider = PROVIDER

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, key: str, model: str, timeout_s: float
    ) -> None:
        super().__init__(http, base_url, key, timeout_s)
        self._model = model

    async def score(self, system: str, user: str) -> Score:
        """Score a lead from a system prompt and the user content."""
        data = await self._request(
            "POST",
            "/chat/completions",
            json={
                "model": self._model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "response_format": {"type": "json_object"},
                "temperature": 0,
            },
        )
        return _parse_score(data)


def _parse_score(data: Any) -> Score:
    """Read the score out of a chat completion, or raise MalformedResponse."""
    try:
        # json.loads reads a lone surrogate escape (which the model may well produce) as a
        # character; Score then replaces it like any text Postgres cannot store.
        return Score.model_validate(json.loads(data["choices"][0]["message"]["content"]))
    except (KeyError, IndexError, TypeError, ValueError, RecursionError):
        # The cause is dropped: pydantic quotes the model's reply, which may echo lead data.
        raise MalformedResponse(PROVIDER, "reply is not a valid score") from None

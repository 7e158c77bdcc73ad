"""Client for an OpenAI-compatible chat completions API that scores leads.

The base URL includes the API version (`https://api.openai.com/v1`); the call is
`POST {base}/chat/completions` with Structured Outputs: a strict `json_schema` response format
asking for `{score, reason}`. A refusal, a reply cut short (`finish_reason` `length` or
`content_filter`) or a reply that does not fit the schema fails the attempt; no error quotes
the reply.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel, Field

from app.providers.errors import MalformedResponse, Permanent
from app.providers.http import ProviderClient
from app.storable import StorableStr

PROVIDER = "ai"

# Strict Structured Outputs want every property required and no others allowed.
SCORE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "lead_score",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "score": {
                    "type": "integer",
                    "description": "1 cold, 2 some interest, 3 asked about price or timing, "
                    "4 ready for the next step",
                    "enum": [1, 2, 3, 4],
                },
                "reason": {"type": "string", "description": "One sentence on why."},
            },
            "required": ["score", "reason"],
            "additionalProperties": False,
        },
    },
}


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
                "response_format": SCORE_FORMAT,
                "temperature": 0,
            },
        )
        return _parse_score(data)


def _parse_score(data: Any) -> Score:
    """Read the score out of a chat completion, or raise MalformedResponse (Permanent for a
    refusal: asking again gets the same answer)."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        finish = choice.get("finish_reason")
        refusal = message.get("refusal")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MalformedResponse(PROVIDER, "reply is not a valid score") from None
    if refusal:
        raise Permanent(PROVIDER, "the model refused to score")
    if finish == "length":
        raise MalformedResponse(PROVIDER, "reply cut short (finish_reason length)")
    if finish == "content_filter":
        raise Permanent(PROVIDER, "reply withheld by the content filter")
    try:
        # json.loads reads a lone surrogate escape (which the model may well produce) as a
        # character; Score then replaces it like any text Postgres cannot store.
        return Score.model_validate(json.loads(data["choices"][0]["message"]["content"]))
    except (KeyError, IndexError, TypeError, ValueError, RecursionError):
        # The cause is dropped: pydantic quotes the model's reply, which may echo lead data.
        raise MalformedResponse(PROVIDER, "reply is not a valid score") from None

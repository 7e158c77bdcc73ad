"""lead_scoring: ask an OpenAI-compatible model how warm a lead is, from its conversation."""

from __future__ import annotations

from sqlalchemy import func, update

from app.db import driver_connection
from app.handlers.deps import job_handler, providers, require
from app.handlers.store import get_lead, recent_messages
from app.models import leads
from app.queue import Discard, JobContext

SYSTEM_PROMPT = (
    "You score sales leads from their recent conversation with us. Answer with a JSON object "
    '{"score": <1-4>, "reason": "<one sentence>"} where 4 means ready to buy, 3 interested, '
    "2 lukewarm and 1 not interested."
)


# What one scoring may send the model, in characters: anyone who can email a lead can fill
# its messages, and must not be able to run up the AI bill with them.
MAX_PROMPT_CHARS = 12_000
MAX_MESSAGE_CHARS = 2_000
MAX_SUBJECT_CHARS = 200


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " […]"


def transcript(rows) -> str:
    """The conversation, oldest first, newest messages kept when it is over MAX_PROMPT_CHARS.

    `rows` come newest first."""
    lines: list[str] = []
    used = 0
    for row in rows:
        subject = f" (subject: {_cut(row.subject, MAX_SUBJECT_CHARS)})" if row.subject else ""
        line = (
            f"[{row.sent_at:%Y-%m-%d} {row.channel} {row.direction}]{subject} "
            f"{_cut(row.text, MAX_MESSAGE_CHARS)}"
        )
        if lines and used + len(line) + 1 > MAX_PROMPT_CHARS:
            break
        lines.append(line[:MAX_PROMPT_CHARS])
        used += len(line) + 1
    return "\n".join(reversed(lines))


@job_handler("lead_scoring", dedupe="forever", max_attempts=5)
async def lead_scoring(ctx: JobContext) -> None:
    """Score the lead from its latest messages and store score and reason."""
    ai = require(await providers(ctx).ai_for(ctx.job.client_id), "ai")
    async with ctx.engine.connect() as conn:
        lead = await get_lead(await driver_connection(conn), ctx.job.lead_id, ctx.job.client_id)
        if lead is None:
            raise Discard("the lead no longer exists")
        rows = await recent_messages(conn, lead["id"])
    if not rows:
        raise Discard("the lead has no messages to score")
    result = await ai.score(SYSTEM_PROMPT, transcript(rows))
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(leads)
            .where(leads.c.id == lead["id"])
            .values(
                score=result.score,
                score_reason=result.reason[:1000],
                scored_at=func.now(),
                updated_at=func.now(),
            )
        )

"""The handler contract: the job a handler is given, and the context it runs in."""

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import Database


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    client_id: str | None
    lead_id: str | None
    dedupe_key: str
    stale: bool
    token: str


@dataclass
class JobContext:
    """What a handler gets: its job, the database, the app's dependencies and its deadline."""

    job: ClaimedJob
    db: Database
    deps: Any
    deadline: float  # on the event loop's clock

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    def time_left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

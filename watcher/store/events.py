"""Log lines that are only true once a DB transaction has committed.

A lifecycle line ("deposit credited", "withdrawal mined", "alarm raised") written
inside a transaction that then rolls back would lie. :func:`after_commit` queues the
line on the session; it is written when that session's transaction commits and
dropped when it rolls back. Arguments may be given as a callable returning them, so
attributes set after the call (in the same transaction) are read at commit time.

The queue is only filled when the logger is enabled for the line's level, so a
daemon running at WARNING pays one ``isEnabledFor`` per event and formats nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_KEY = "watcher.after_commit_logs"

Args = tuple[Any, ...] | Callable[[], tuple[Any, ...]]
_Entry = tuple[logging.Logger, int, str, Args, dict[str, Any] | None]


def after_commit(
    session: Session | AsyncSession,
    logger: logging.Logger,
    msg: str,
    args: Args = (),
    *,
    level: int = logging.INFO,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``logger.log(level, msg, *args)`` when ``session`` commits."""
    if not logger.isEnabledFor(level):
        return
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    entries: list[_Entry] = sync.info.setdefault(_KEY, [])
    entries.append((logger, level, msg, args, extra))


@event.listens_for(Session, "after_commit")
def _emit(session: Session) -> None:
    entries: list[_Entry] | None = session.info.pop(_KEY, None)
    for logger, level, msg, args, extra in entries or ():
        values = args() if callable(args) else args
        logger.log(level, msg, *values, extra=extra)


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(_KEY, None)

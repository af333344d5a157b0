"""User and engine routes; each capability registers its handlers here."""

from __future__ import annotations

from aiohttp import web


def add_routes(web_app: web.Application) -> None:
    from watcher.api import accounts, engine, withdrawals

    engine.add_routes(web_app)
    accounts.add_routes(web_app)
    withdrawals.add_routes(web_app)

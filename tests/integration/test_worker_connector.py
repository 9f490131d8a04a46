"""The connector `manage.py baton worker` runs Procrastinate's queries on: autocommit
connections (each of its queries is one atomic statement, so BEGIN/COMMIT round trips
are waste) with psycopg's prepared statements on unless the settings turn them off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import connection

from baton.execution.worker import worker_connector

pytestmark = pytest.mark.django_db(transaction=True)


def pooled_connection_facts() -> dict[str, Any]:
    async def facts() -> dict[str, Any]:
        connector = worker_connector()
        await connector.open_async()
        try:
            async with connector.pool.connection() as conn:
                before = conn.info.transaction_status
                cursor = await conn.execute("SELECT count(*) FROM procrastinate_jobs")
                await cursor.fetchone()
                return {
                    "autocommit": conn.autocommit,
                    "idle_after_query": conn.info.transaction_status == before,
                    "prepare_threshold": conn.prepare_threshold,
                }
        finally:
            await connector.close_async()

    return asyncio.run(facts())


def test_worker_connections_autocommit_and_prepare() -> None:
    assert pooled_connection_facts() == {
        "autocommit": True,
        "idle_after_query": True,  # no transaction left open: no COMMIT to send
        "prepare_threshold": 5,  # psycopg's default, where Django's connections say None
    }


def test_prepare_threshold_none_in_options_is_respected() -> None:
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["prepare_threshold"] = None
    try:
        assert pooled_connection_facts()["prepare_threshold"] is None
    finally:
        del options["prepare_threshold"]

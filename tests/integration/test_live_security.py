"""The live sockets against a hostile world: foreign origins, revoked users, bad frames."""

from __future__ import annotations

import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from baton.live import consumers
from tests.helpers import chain, completed, run_step

pytestmark = pytest.mark.django_db(transaction=True)


def socket_for(path: str, user: Any, origin: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode())] if origin else []
    socket = WebsocketCommunicator(consumers.WorkflowConsumer.as_asgi(), path, headers=headers)
    socket.scope["user"] = user
    socket.scope["url_route"] = {"kwargs": {"workflow_id": path.rstrip("/").rsplit("/", 1)[1]}}
    return socket


def staff() -> User:
    return User.objects.create_user(f"staff{time.monotonic_ns()}", password="x", is_staff=True)


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (None, True),  # not a browser: nothing to hijack
        ("http://testserver", True),
        ("http://127.0.0.1:8000", True),
        ("https://evil.example", False),
        ("null", False),
    ],
)
def test_a_foreign_origin_is_refused_even_with_a_staff_session(
    origin: str | None, accepted: bool
) -> None:
    workflow = chain()
    user = staff()

    async def scenario() -> None:
        socket = socket_for(f"/ws/baton/workflows/{workflow.pk}/", user, origin)
        assert await socket.connect(timeout=10) == (True, None)
        first = await socket.receive_output(timeout=10)
        if accepted:
            assert first["type"] == "websocket.send" and '"snapshot"' in first["text"]
        else:
            assert first == {"type": "websocket.close", "code": consumers.CLOSE_FORBIDDEN}
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_bad_frame_gets_an_error_and_the_socket_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = chain()
    user = staff()

    async def scenario() -> None:
        socket = socket_for(f"/ws/baton/workflows/{workflow.pk}/", user)
        await socket.connect(timeout=10)
        await socket.receive_json_from(timeout=10)  # the snapshot
        await socket.send_to(text_data="{not json")
        assert (await socket.receive_json_from(timeout=10))["type"] == "error"
        await socket.send_json_to({"action": "nonsense"})
        assert (await socket.receive_json_from(timeout=10))["type"] == "error"
        step_id = await database_sync_to_async(lambda: workflow.steps.get(name="a").pk)()
        await socket.send_json_to({"action": "detail", "step_id": step_id})
        assert (await socket.receive_json_from(timeout=10))["type"] == "detail"
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_revoked_user_stops_receiving(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Permissions are re-checked while events flow (AUTH_RECHECK_SECONDS, 0 here): a user
    whose staff status is taken away is closed with 4403 at the next event."""
    monkeypatch.setattr(consumers, "AUTH_RECHECK_SECONDS", 0.0)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.BATON = {"CHANNEL_LAYER": "default"}
    workflow = chain()
    user = staff()

    async def scenario() -> None:
        socket = socket_for(f"/ws/baton/workflows/{workflow.pk}/", user)
        await socket.connect(timeout=10)
        await socket.receive_json_from(timeout=10)
        await database_sync_to_async(User.objects.filter(pk=user.pk).update)(is_staff=False)
        user.is_staff = False  # the scope's user object: no session to reload it from
        await database_sync_to_async(run_step)(workflow, "a", completed(1))
        from baton import broadcast

        await database_sync_to_async(broadcast.flush)()
        message = await socket.receive_output(timeout=10)
        assert message == {"type": "websocket.close", "code": consumers.CLOSE_FORBIDDEN}

    async_to_sync(scenario)()


def test_a_huge_page_number_is_a_page(monkeypatch: pytest.MonkeyPatch) -> None:
    assert consumers._page_number(b"page=" + b"9" * 30) == consumers.MAX_PAGE
    assert consumers._page_number(b"page=" + b"9" * 5000) == 1
    assert consumers._page_number(b"page=-4") == 1

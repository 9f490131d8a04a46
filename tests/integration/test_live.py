"""The live pages: who may see them, what they draw, the layout, and the WebSocket consumers.

The consumers are driven with Channels' WebsocketCommunicator over the real Redis layer
(REDIS_URL; make test starts one). Steps are moved with the engine's own claim/finish,
which announce after commit and so broadcast exactly as a worker does.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client
from django.urls import reverse

import baton
from baton import broadcast
from baton.broadcast import decimal_text
from baton.display import format_usd
from baton.execution import advance
from baton.execution.advance import Discarded
from baton.live import drawing, queries, views
from baton.live.layout import depths, layout
from baton.llm.ledger import Call
from baton.llm.usage import Usage
from baton.models import Workflow, WorkflowStep
from baton.routing import websocket_urlpatterns
from tests.helpers import (
    chain,
    completed,
    load_shared_dag,
    run_step,
    shared_dag_files,
    shared_missing_reason,
)
from tests.testapp.tasks import Echo

XSS = "<script>alert(1)</script>"


# ------------------------------------------------------------------------------ helpers
def make_user(*, staff: bool = False, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(f"u-{uuid.uuid4().hex[:8]}", password="x", is_staff=staff)
    if perms:
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="baton", codename__in=perms)
        )
    return user


class Nodes(HTMLParser):
    """The SVG nodes of a workflow page: {data-step: attributes}."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, dict[str, str | None]] = {}
        self.groups: dict[str, int] = {}  # group nodes: name -> steps in it
        self.texts: list[str] = []
        self._in_state_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "g" and found.get("class") == "node":
            name = found["data-step"]
            assert name is not None
            assert name not in self.nodes, f"two nodes for step {name}"
            self.nodes[name] = found
        if tag == "a" and found.get("class") == "group":
            self.groups[str(found["data-group"])] = int(found["data-size"] or 0)
        self._in_state_text = tag == "text" and found.get("class") == "state"

    def handle_data(self, data: str) -> None:
        if self._in_state_text:
            self.texts.append(data)
            self._in_state_text = False


def parse_nodes(html: str) -> Nodes:
    parser = Nodes()
    parser.feed(html)
    return parser


def priced_call(key: str, cost: str | None, model: str = "gpt-4o-mini") -> Call:
    """A model call as a step's ledger records it; cost None: the pricing did not know it."""
    usage = Usage(model=model, input_tokens=1000, output_tokens=200)
    return Call(call_key=key, usage=usage, cost_usd=None if cost is None else Decimal(cost))


def with_calls(*calls: Call) -> advance.Completed:
    """A completion whose attempt recorded `calls` (the engine adds them to the totals)."""
    return advance.Completed(value_json=None, calls=calls)


def costed(name: str = "costed") -> Workflow:
    """chain() with a $2 budget, a completed with a priced call, b with an unpriced one."""
    workflow: Workflow = (
        baton.new(name, budget_usd=Decimal("2.00"))
        .add("a", Echo.new(value=1))
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["b"])
        .insert()
    )
    run_step(workflow, "a", with_calls(priced_call("k1", "0.00027")))
    run_step(workflow, "b", with_calls(priced_call("k1", None, model="acme-9000")))
    workflow.refresh_from_db()
    return workflow


def floats_in(value: Any, path: str = "$") -> Iterator[str]:
    """Where `value` (decoded JSON) holds a float: money must never travel as one."""
    if isinstance(value, float):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from floats_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from floats_in(item, f"{path}[{index}]")


def list_url() -> str:
    return reverse("baton:workflows")


def page_url(workflow: Workflow) -> str:
    return reverse("baton:workflow", args=[workflow.pk])


# -------------------------------------------------------------------------------- views
@pytest.mark.django_db
class TestViews:
    def test_anonymous_is_sent_to_log_in(self, client: Client) -> None:
        workflow = chain()
        for url in (list_url(), page_url(workflow)):
            response = client.get(url)
            assert response.status_code == 302
            assert response["Location"] == f"{reverse('admin:login')}?next={url}"

    def test_logged_in_without_permission_is_refused(self, client: Client) -> None:
        workflow = chain()
        client.force_login(make_user(staff=False))
        assert client.get(list_url()).status_code == 403
        assert client.get(page_url(workflow)).status_code == 403

    def test_staff_may_look(self, client: Client) -> None:
        workflow = chain()
        client.force_login(make_user(staff=True))
        assert client.get(list_url()).status_code == 200
        assert client.get(page_url(workflow)).status_code == 200

    def test_the_view_permission_is_enough_without_staff(self, client: Client) -> None:
        workflow = chain()
        client.force_login(make_user(staff=False, perms=("view_workflow",)))
        assert client.get(list_url()).status_code == 200
        assert client.get(page_url(workflow)).status_code == 200

    def test_unknown_workflow_is_404(self, admin_client: Client) -> None:
        response = admin_client.get(reverse("baton:workflow", args=[uuid.uuid4()]))
        assert response.status_code == 404

    def test_list_shows_newest_first_with_state_word_progress_and_link(
        self, admin_client: Client
    ) -> None:
        older = chain("older-one")
        newer = chain("newer-one")
        run_step(newer, "a", completed(1))

        html = admin_client.get(list_url()).content.decode()

        assert html.index("newer-one") < html.index("older-one")
        assert page_url(newer) in html and page_url(older) in html
        row = re.search(rf'<tr data-workflow-id="{newer.pk}".*?</tr>', html, re.S)
        assert row is not None
        assert 'data-state="executing">executing</span>' in row.group(0)  # a word
        assert "1/3" in row.group(0)

    def test_list_is_paginated(self, admin_client: Client, monkeypatch) -> None:
        monkeypatch.setattr(views, "WORKFLOWS_PER_PAGE", 2)
        names = [f"wf-{i}" for i in range(5)]
        for name in names:
            baton.new(name).add("x", Echo.new()).insert()

        first = admin_client.get(list_url()).content.decode()
        last = admin_client.get(list_url(), {"page": 3}).content.decode()

        assert "wf-4" in first and "wf-3" in first and "wf-2" not in first
        assert "wf-0" in last and "wf-1" not in last
        assert "page 3 of 3" in last

    def test_names_are_escaped_everywhere(self, admin_client: Client) -> None:
        workflow = (
            baton.new(XSS)
            .add(XSS, Echo.new())
            .add('"><img src=x onerror=alert(2)>', Echo.new(), deps=[XSS])
            .insert()
        )
        for url in (list_url(), page_url(workflow)):
            html = admin_client.get(url).content.decode()
            assert XSS not in html
            assert "<img src=x" not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        # The embedded JSON (json_script) cannot close its <script> element either.
        assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in html

    def test_page_draws_a_node_per_step_with_its_state_as_attribute_and_word(
        self, admin_client: Client
    ) -> None:
        workflow = chain("drawn")
        run_step(workflow, "a", completed(1))

        response = admin_client.get(page_url(workflow))

        assert response.status_code == 200
        html = response.content.decode()
        parsed = parse_nodes(html)
        assert {name: node["data-state"] for name, node in parsed.nodes.items()} == {
            "a": "completed",
            "b": "available",
            "c": "waiting",
        }
        assert sorted(parsed.texts) == ["available", "completed", "waiting"]  # words too
        versions = dict(
            WorkflowStep.objects.filter(workflow=workflow).values_list("name", "version")
        )
        assert {n: int(node["data-version"] or -1) for n, node in parsed.nodes.items()} == versions
        # Header: state, progress n/m, timings and the cost (no model call: none).
        assert 'data-role="workflow-state" data-state="executing">executing</span>' in html
        assert '<span data-role="progress">1/3</span>' in html
        assert '<span data-role="cost" data-cost-usd="">—</span>' in html
        assert '<span data-role="budget" hidden></span>' in html  # no budget
        assert '<div data-role="reason-fact" hidden>' in html
        assert "<dt>Started</dt>" in html and "<dt>Duration</dt>" in html
        # Edges: a -> b and b -> c, drawn as one path of two curves.
        path = re.search(r'<path class="edges[^"]*" d="([^"]+)"', html)
        assert path is not None and path.group(1).count("M") == 2

    def test_a_failed_workflow_shows_failed_and_the_discarded_step(
        self, admin_client: Client
    ) -> None:
        workflow = chain("breaks")
        run_step(workflow, "a", Discarded(error="boom", traceback="", reason="it broke"))

        html = admin_client.get(page_url(workflow)).content.decode()

        states = {n: node["data-state"] for n, node in parse_nodes(html).nodes.items()}
        assert states == {"a": "discarded", "b": "cancelled", "c": "cancelled"}
        assert 'data-state="failed">failed</span>' in html
        assert '<span data-role="progress">3/3</span>' in html

    def test_large_graph_renders_every_step_once(self, admin_client: Client) -> None:
        workflow = replay("epigenomics-chameleon-ilmn-6seq-50k-001")

        html = admin_client.get(page_url(workflow)).content.decode()

        # Opened as it is, the graph is folded: by column and name, into readable nodes.
        folded = parse_nodes(html)
        assert len(folded.nodes) + sum(folded.groups.values()) == 1_695
        assert len(folded.nodes) + len(folded.groups) < 40
        assert folded.groups["map… (column 5)"] == 420

        html = admin_client.get(page_url(workflow) + "?expand=*").content.decode()

        nodes = parse_nodes(html).nodes
        assert len(nodes) == 1_695
        places = {node["transform"] for node in nodes.values()}
        assert len(places) == 1_695  # no two steps drawn on top of each other
        path = re.search(r'<path class="edges[^"]*" d="([^"]+)"', html)
        assert path is not None and path.group(1).count("M") == 2_108

    def test_above_the_edge_limit_only_steps_are_drawn_with_a_note(
        self, admin_client: Client, monkeypatch
    ) -> None:
        monkeypatch.setattr(drawing, "MAX_DRAWN_EDGES", 1)
        workflow = chain("no-edges")

        html = admin_client.get(page_url(workflow)).content.decode()

        assert 'class="edges' not in html
        assert "This workflow has 2 dependencies, more than the 1 drawn" in html
        assert len(parse_nodes(html).nodes) == 3

    def test_page_shows_the_workflow_cost_its_budget_and_each_step_cost(
        self, admin_client: Client
    ) -> None:
        workflow = costed()
        assert (workflow.cost_usd, workflow.unpriced_calls) == (Decimal("0.00027"), 1)

        html = admin_client.get(page_url(workflow)).content.decode()

        assert (
            '<span data-role="cost" data-cost-usd="0.00027">$0.00027 + 1 unpriced</span>'
            ' <span data-role="budget">of $2.00</span>'
        ) in html
        titles = dict(re.findall(r'data-step="([^"]+)".*?<title>([^<]*)</title>', html))
        assert titles == {"a": "a · cost $0.00027", "b": "b · cost unknown", "c": "c"}
        assert '<dt>Cost</dt><dd data-field="cost"></dd>' in html  # the step detail's

    def test_list_has_a_cost_column(self, admin_client: Client) -> None:
        workflow = costed()
        plain = chain("no-calls")

        html = admin_client.get(list_url()).content.decode()

        assert "<th>Cost</th>" in html
        for each, cell in (
            (
                workflow,
                '<td data-role="cost" data-cost-usd="0.00027" data-label="Cost">'
                "$0.00027 + 1 unpriced</td>",
            ),
            (plain, '<td data-role="cost" data-cost-usd="" data-label="Cost">—</td>'),
        ):
            row = re.search(rf'<tr data-workflow-id="{each.pk}".*?</tr>', html, re.S)
            assert row is not None and cell in row.group(0)

    def test_a_failed_workflow_shows_its_reason_escaped(self, admin_client: Client) -> None:
        workflow = chain("over-budget")
        Workflow.objects.filter(pk=workflow.pk).update(reason=f"budget exceeded: {XSS}")
        run_step(workflow, "a", Discarded(error="", traceback="", reason="budget exceeded"))

        html = admin_client.get(page_url(workflow)).content.decode()

        assert (
            '<div data-role="reason-fact"><dt>Reason</dt><dd data-role="reason">'
            "budget exceeded: &lt;script&gt;alert(1)&lt;/script&gt;</dd></div>"
        ) in html
        assert XSS not in html

    def test_snapshots_carry_costs_as_decimal_strings(self) -> None:
        workflow = costed("snapshot-costs")

        snapshot = queries.workflow_snapshot(workflow.pk)

        assert snapshot is not None
        decoded = json.loads(json.dumps(snapshot))  # plain JSON: no Decimal left in it
        assert list(floats_in(decoded)) == []
        summary = decoded["workflow"]
        assert (summary["cost_usd"], summary["unpriced_calls"]) == ("0.00027", 1)
        assert (summary["budget_usd"], summary["reason"]) == ("2", "")
        costs = {s["name"]: (s["cost_usd"], s["unpriced_calls"]) for s in decoded["steps"]}
        assert costs == {"a": ("0.00027", 0), "b": (None, 1), "c": (None, 0)}
        for step in WorkflowStep.objects.filter(workflow=workflow):
            assert costs[step.name] == (decimal_text(step.cost_usd), step.unpriced_calls)
        assert format_usd(Decimal(summary["cost_usd"]), 1) == "$0.00027 + 1 unpriced"


def replay(dag: str) -> Workflow:
    data = load_shared_dag(dag)  # skips, naming the path, when ../shared is absent
    builder = baton.new(dag)
    for task in data["tasks"]:
        builder.add(task["id"], Echo.new(), deps=task["deps"])
    workflow: Workflow = builder.insert()
    return workflow


# ------------------------------------------------------------------------------- layout
def load_dag(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    data = json.loads(path.read_text())
    nodes = [task["id"] for task in data["tasks"]]
    edges = [(dep, task["id"]) for task in data["tasks"] for dep in task["deps"]]
    return nodes, edges


class TestLayout:
    def test_depth_is_the_longest_path_from_a_root(self) -> None:
        nodes = ["a", "b", "c", "d", "e"]
        edges = [("a", "b"), ("b", "c"), ("a", "d"), ("c", "d"), ("e", "d")]
        assert depths(nodes, edges) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 0}

    def test_columns_are_depths_and_rows_count_within_a_column(self) -> None:
        graph = layout(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
        assert {n: x for n, (x, _) in graph.positions.items()} == {"a": 0, "b": 1, "c": 1, "d": 2}
        assert sorted(y for n, (_, y) in graph.positions.items() if n in "bc") == [0, 1]
        assert (graph.columns, graph.rows, graph.column_sizes) == (3, 2, (1, 2, 1))

    def test_ordering_uncrosses_edges(self) -> None:
        # Given in this order, b2 would sit above b1 and the two edges would cross.
        graph = layout(["a1", "a2", "b2", "b1"], [("a1", "b1"), ("a2", "b2")])
        rows = {n: y for n, (_, y) in graph.positions.items()}
        assert rows["a1"] < rows["a2"]
        assert rows["b1"] < rows["b2"]

    def test_cycles_and_unknown_nodes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="cycle"):
            layout(["a", "b"], [("a", "b"), ("b", "a")])
        with pytest.raises(ValueError, match="unknown"):
            layout(["a"], [("a", "z")])

    def test_empty_graph(self) -> None:
        graph = layout([], [])
        assert (len(graph), graph.columns, graph.rows) == (0, 0, 0)

    @pytest.mark.parametrize(
        "path",
        shared_dag_files() or [pytest.param(None, marks=pytest.mark.skip(shared_missing_reason()))],
        ids=lambda p: p.stem if p else "absent",
    )
    def test_real_graphs_get_distinct_deterministic_positions(self, path: Path) -> None:
        nodes, edges = load_dag(path)

        graph = layout(nodes, edges)

        assert len(graph) == len(nodes)
        assert len(set(graph.positions.values())) == len(nodes)
        for upstream, downstream in edges:  # every dependency points right
            assert graph.positions[upstream][0] < graph.positions[downstream][0]
        assert layout(nodes, edges) == graph  # same graph, same picture
        assert graph.column_sizes and sum(graph.column_sizes) == len(nodes)
        assert graph.rows == max(graph.column_sizes)


# ---------------------------------------------------------------------------- consumers
@pytest.fixture
def redis_layer(settings):
    if not os.environ.get("REDIS_URL"):
        if os.environ.get("CI"):
            pytest.fail("REDIS_URL is not set in CI: the consumer tests need real Redis")
        pytest.skip("REDIS_URL not set: run with `make test`, which starts a private Redis")
    settings.BATON = {"CHANNEL_LAYER": "default"}


APPLICATION = URLRouter(websocket_urlpatterns)


def communicator(path: str, user: Any) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(APPLICATION, path)
    socket.scope["user"] = user
    return socket


def in_loop(scenario: Callable[[], Awaitable[None]]) -> None:
    """One event loop for the whole scenario (channels-redis keeps connections per loop)."""
    async_to_sync(scenario)()


async def expect_refusal(socket: WebsocketCommunicator, code: int) -> None:
    """Refused sockets are accepted, then closed with the code, so that the page can
    read it (a refused handshake is an HTTP 403 a browser reports as 1006)."""
    assert await socket.connect(timeout=10) == (True, None)
    assert await socket.receive_output(timeout=10) == {"type": "websocket.close", "code": code}


async def receive_until(socket: WebsocketCommunicator, wanted: Callable[[dict], bool]) -> dict:
    """The first message that `wanted` accepts (skipping others), within 10 s each; the
    messages of a batch (one broadcast's events, in order) count one by one."""
    # What is left of a batch waits on the socket for the next call.
    waiting: list[dict] = socket.__dict__.setdefault("batched", [])
    while True:
        if not waiting:
            message = await socket.receive_json_from(timeout=10)
            waiting.extend(message["messages"] if message["type"] == "batch" else [message])
        message = waiting.pop(0)
        if wanted(message):
            return message


@pytest.mark.django_db(transaction=True)
class TestConsumers:
    @pytest.mark.parametrize("who", ["anonymous", "no permission"])
    def test_refused_before_joining_anything(self, redis_layer, who: str) -> None:
        workflow = chain()
        user = AnonymousUser() if who == "anonymous" else make_user(staff=False)

        async def scenario() -> None:
            sockets = []
            for path in (f"/ws/baton/workflows/{workflow.pk}/", "/ws/baton/workflows/"):
                socket = communicator(path, user)
                await expect_refusal(socket, 4403)
                sockets.append(socket)
            # Neither joined its group: the broadcasts of a transition reach nobody here.
            await database_sync_to_async(run_step)(workflow, "a", completed(1))
            for socket in sockets:
                assert await socket.receive_nothing(timeout=1)

        in_loop(scenario)

    def test_unknown_workflow_is_closed_with_4404(self, redis_layer) -> None:
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator(f"/ws/baton/workflows/{uuid.uuid4()}/", user)
            await expect_refusal(socket, 4404)

        in_loop(scenario)

    @pytest.mark.parametrize("who", ["staff", "permission"])
    def test_snapshot_then_live_step_and_workflow_events(self, redis_layer, who: str) -> None:
        workflow = chain("live")
        run_step(workflow, "a", completed(1))
        if who == "staff":
            user = make_user(staff=True)
        else:
            user = make_user(staff=False, perms=("view_workflow",))

        async def scenario() -> None:
            socket = communicator(f"/ws/baton/workflows/{workflow.pk}/", user)
            assert await socket.connect(timeout=10) == (True, None)

            snapshot = await socket.receive_json_from(timeout=10)
            assert snapshot["type"] == "snapshot"
            assert snapshot["workflow"]["id"] == str(workflow.pk)
            assert snapshot["workflow"]["state"] == "executing"
            assert snapshot["workflow"]["unfinished_steps"] == 2
            steps = {s["name"]: (s["state"], s["version"]) for s in snapshot["steps"]}
            assert steps == {
                name: (state, version)
                for name, state, version in await database_sync_to_async(list)(
                    WorkflowStep.objects.filter(workflow=workflow).values_list(
                        "name", "state", "version"
                    )
                )
            }
            assert steps["a"][0] == "completed" and steps["b"][0] == "available"

            # The engine moves b (claim: executing; finish: completed, c available); each
            # transition is broadcast after commit, over Redis, to this socket.
            await database_sync_to_async(run_step)(workflow, "b", completed(2))
            b_done = await receive_until(
                socket,
                lambda m: (
                    m["type"] == "step"
                    and m["step"]["name"] == "b"
                    and m["step"]["state"] == "completed"
                ),
            )
            assert b_done["step"]["version"] > steps["b"][1]
            assert b_done["step"]["old_state"] == "executing"

            await database_sync_to_async(run_step)(workflow, "c", completed(3))
            finished = await receive_until(socket, lambda m: m["type"] == "workflow")
            assert finished["workflow"]["state"] == "completed"
            assert finished["workflow"]["unfinished_steps"] == 0
            await socket.disconnect()

        in_loop(scenario)

    def test_forwards_what_broadcast_send_sends_and_only_for_its_workflow(
        self, redis_layer
    ) -> None:
        workflow = chain("forward")
        other = chain("other")
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator(f"/ws/baton/workflows/{workflow.pk}/", user)
            assert (await socket.connect(timeout=10))[0]
            assert (await socket.receive_json_from(timeout=10))["type"] == "snapshot"

            step = await database_sync_to_async(WorkflowStep.objects.get)(
                workflow=workflow, name="c"
            )
            other_step = await database_sync_to_async(WorkflowStep.objects.get)(
                workflow=other, name="c"
            )
            step.version = 99
            # To the wrong workflow's group: never seen here.
            await database_sync_to_async(broadcast.on_step_transitioned)(
                sender=None, step=other_step, old_state="waiting", new_state="waiting"
            )
            await database_sync_to_async(broadcast.on_step_transitioned)(
                sender=None, step=step, old_state="waiting", new_state="waiting"
            )
            message = await socket.receive_json_from(timeout=10)
            assert message["type"] == "step"
            assert (message["step"]["id"], message["step"]["version"]) == (step.id, 99)
            assert await socket.receive_nothing(timeout=0.5)
            await socket.disconnect()

        in_loop(scenario)

    def test_step_detail_on_request(self, redis_layer) -> None:
        workflow = chain("detail")
        run_step(workflow, "a", Discarded(error="Traceback: <b>boom</b>", traceback="", reason="r"))
        step_a = WorkflowStep.objects.get(workflow=workflow, name="a")
        foreign = WorkflowStep.objects.get(workflow=chain("foreign"), name="a")
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator(f"/ws/baton/workflows/{workflow.pk}/", user)
            assert (await socket.connect(timeout=10))[0]
            await socket.receive_json_from(timeout=10)

            await socket.send_json_to({"action": "detail", "step_id": step_a.id})
            detail = await socket.receive_json_from(timeout=10)
            assert detail["type"] == "detail"
            assert detail["step"]["name"] == "a"
            assert detail["step"]["state"] == "discarded"
            assert detail["step"]["last_error"] == "Traceback: <b>boom</b>"
            assert detail["step"]["attempt"] == 1
            # A step of another workflow is not shown through this socket.
            await socket.send_json_to({"action": "detail", "step_id": foreign.id})
            assert await socket.receive_nothing(timeout=0.5)
            await socket.disconnect()

        in_loop(scenario)

    def test_list_socket_sends_the_page_then_changed_and_new_workflows(self, redis_layer) -> None:
        existing = chain("existing")
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator("/ws/baton/workflows/?page=1", user)
            assert await socket.connect(timeout=10) == (True, None)
            first = await socket.receive_json_from(timeout=10)
            assert first["type"] == "workflows" and first["snapshot"] is True
            assert [w["id"] for w in first["workflows"]] == [str(existing.pk)]

            await database_sync_to_async(run_step)(existing, "a", completed(1))
            changed = await receive_until(
                socket,
                lambda m: any(
                    w["id"] == str(existing.pk) and w["unfinished_steps"] == 2
                    for w in m["workflows"]
                ),
            )
            assert "snapshot" not in changed

            newcomer = await database_sync_to_async(chain)("newcomer")
            await database_sync_to_async(run_step)(newcomer, "a", completed(1))
            appeared = await receive_until(
                socket, lambda m: any(w["id"] == str(newcomer.pk) for w in m["workflows"])
            )
            (summary,) = [w for w in appeared["workflows"] if w["id"] == str(newcomer.pk)]
            assert summary["name"] == "newcomer" and summary["step_count"] == 3
            await socket.disconnect()

        in_loop(scenario)

    def test_step_events_carry_the_step_cost_and_the_workflow_totals(self, redis_layer) -> None:
        workflow = costed("live-costs")
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator(f"/ws/baton/workflows/{workflow.pk}/", user)
            assert (await socket.connect(timeout=10))[0]
            snapshot = await socket.receive_json_from(timeout=10)
            assert snapshot["workflow"]["cost_usd"] == "0.00027"
            assert snapshot["workflow"]["budget_usd"] == "2"

            # c's completion records a priced call: its event brings c's cost and the
            # workflow's new totals; its claim (no call recorded) brings no totals.
            await database_sync_to_async(run_step)(
                workflow, "c", with_calls(priced_call("k1", "0.000084"))
            )
            claimed = await receive_until(
                socket, lambda m: m["type"] == "step" and m["step"]["state"] == "executing"
            )
            assert "workflow_cost_usd" not in claimed
            assert "workflow_unpriced_calls" not in claimed
            done = await receive_until(
                socket, lambda m: m["type"] == "step" and m["step"]["state"] == "completed"
            )
            finished = await receive_until(socket, lambda m: m["type"] == "workflow")

            c = await database_sync_to_async(WorkflowStep.objects.get)(workflow=workflow, name="c")
            fresh = await database_sync_to_async(Workflow.objects.get)(pk=workflow.pk)
            assert fresh.cost_usd == Decimal("0.000354")
            assert (done["step"]["cost_usd"], done["step"]["unpriced_calls"]) == (
                decimal_text(c.cost_usd),
                c.unpriced_calls,
            )
            assert done["step"]["cost_usd"] == "0.000084"
            assert (done["workflow_cost_usd"], done["workflow_unpriced_calls"]) == ("0.000354", 1)
            assert Decimal(done["workflow_cost_usd"]) == fresh.cost_usd
            summary = finished["workflow"]
            assert (summary["cost_usd"], summary["unpriced_calls"]) == ("0.000354", 1)
            for message in (claimed, done, finished):
                assert list(floats_in(message)) == []

            # The detail a click asks for has the cost too.
            await socket.send_json_to({"action": "detail", "step_id": c.id})
            detail = await receive_until(socket, lambda m: m["type"] == "detail")
            assert (detail["step"]["cost_usd"], detail["step"]["unpriced_calls"]) == (
                "0.000084",
                0,
            )
            await socket.disconnect()

        in_loop(scenario)

    def test_list_summaries_carry_the_cost(self, redis_layer) -> None:
        workflow = chain("list-costs")
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator("/ws/baton/workflows/?page=1", user)
            assert (await socket.connect(timeout=10))[0]
            first = await socket.receive_json_from(timeout=10)
            (summary,) = first["workflows"]
            assert (summary["cost_usd"], summary["unpriced_calls"]) == (None, 0)
            assert (summary["budget_usd"], summary["reason"]) == (None, "")

            await database_sync_to_async(run_step)(
                workflow, "a", with_calls(priced_call("k1", "0.0001"), priced_call("k2", None))
            )
            changed = await receive_until(
                socket,
                lambda m: any(
                    w["id"] == str(workflow.pk) and w["cost_usd"] for w in m["workflows"]
                ),
            )
            (summary,) = [w for w in changed["workflows"] if w["id"] == str(workflow.pk)]
            assert (summary["cost_usd"], summary["unpriced_calls"]) == ("0.0001", 1)
            assert list(floats_in(changed)) == []
            await socket.disconnect()

        in_loop(scenario)

"""The workflow page's drawing of big graphs: groups collapse, edges run between layers.

Graphs are inserted, never run: the drawing only reads steps and edges.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

import baton
from baton.live import drawing as graph_drawing
from baton.live.layout import Via, layout
from baton.models import Workflow, WorkflowStep
from tests.helpers import run_step
from tests.integration.test_live import parse_nodes
from tests.testapp.tasks import Echo


def fan(width: int, name: str = "fan") -> Workflow:
    """root -> fan[0..width-1] -> join."""
    workflow: Workflow = (
        baton.new(name)
        .add("root", Echo.new())
        .add_many("fan", [Echo.new()] * width, deps="root")
        .add("join", Echo.new(), deps="fan")
        .insert()
    )
    return workflow


def page(client: Client, workflow: Workflow, query: str = "") -> str:
    response = client.get(reverse("baton:workflow", args=[workflow.pk]) + query)
    assert response.status_code == 200
    return response.content.decode()


def groups_in(html: str) -> dict[str, dict[str, str]]:
    return {
        match.group(1): dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(0)))
        for match in re.finditer(r'<a class="group"[^>]*data-group="([^"]+)"[^>]*>', html)
    }


def segments(html: str) -> list[str]:
    path = re.search(r'<path class="edges[^"]*" d="([^"]+)"', html)
    assert path is not None
    return ["M" + part for part in path.group(1).split("M") if part]


class TestLayoutRouting:
    def test_a_long_edge_gets_a_waypoint_in_each_column_it_crosses(self) -> None:
        # a -> b -> c -> d, and a -> d: the long edge crosses columns 1 and 2.
        graph = layout("abcd", [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")])
        vias = [item for column in graph.order for item in column if isinstance(item, Via)]
        assert vias == [Via("a", 1), Via("a", 2)]
        assert graph.chains == {"a": 2}
        assert graph.rows == 1  # waypoints are not rows of nodes

    def test_long_edges_of_one_source_share_their_waypoints(self) -> None:
        edges = [("s", "x"), ("x", "y"), ("y", "t1"), ("y", "t2"), ("s", "t1"), ("s", "t2")]
        graph = layout(["s", "x", "y", "t1", "t2"], edges)
        vias = [item for column in graph.order for item in column if isinstance(item, Via)]
        assert vias == [Via("s", 1), Via("s", 2)]


@pytest.mark.django_db
class TestBigGraphs:
    def test_a_wide_fan_out_collapses_into_one_group_node_with_counts(
        self, admin_client: Client
    ) -> None:
        workflow = fan(2_000)
        run_step(workflow, "root")
        for index in range(3):
            run_step(workflow, f"fan[{index}]")

        html = page(admin_client, workflow)

        assert set(parse_nodes(html).nodes) == {"root", "join"}
        group = groups_in(html)["fan"]
        assert (group["data-size"], group["data-state"]) == ("2000", "available")
        assert group["href"] == "?expand=fan#focus=fan"
        assert "3 completed · 1,997 waiting" in html
        assert "fan \u00d72000" in html
        # root -> fan -> join: two curves, whatever the width.
        assert len(segments(html)) == 2
        assert len(html) < 30_000

    def test_small_groups_are_drawn_step_by_step(self, admin_client: Client) -> None:
        workflow = fan(graph_drawing.GROUP_THRESHOLD)

        html = page(admin_client, workflow)

        assert groups_in(html) == {}
        assert len(parse_nodes(html).nodes) == graph_drawing.GROUP_THRESHOLD + 2

    def test_a_group_expands_and_collapses_again(self, admin_client: Client) -> None:
        workflow = fan(300)

        html = page(admin_client, workflow, "?expand=fan")

        assert groups_in(html) == {}
        assert len(parse_nodes(html).nodes) == 302
        assert 'href="?" data-role="collapse"' in html
        assert len(parse_nodes(page(admin_client, workflow, "?expand=*")).nodes) == 302

    def test_the_progress_bar_has_a_segment_per_bucket_and_counts_as_text(
        self, admin_client: Client
    ) -> None:
        workflow = fan(2, name="mixed")
        run_step(workflow, "root")
        step = WorkflowStep.objects.get(workflow=workflow, name="fan[0]")
        WorkflowStep.objects.filter(pk=step.pk).update(state="executing")

        html = page(admin_client, workflow)

        bar = re.search(r'<span class="stack" data-role="bar"[^>]*>(.*?)</span></span>', html)
        assert bar is not None
        buckets = re.findall(r'data-bucket="(\w+)" style="width: ([\d.]+)%', bar.group(0))
        assert buckets == [("completed", "25.000"), ("running", "25.000"), ("waiting", "50.000")]
        assert '<span class="counts" data-role="counts">1 completed · 1 running · 2 waiting' in html


def _drawn_boxes(html: str) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in re.findall(
            r'<g class="node"[^>]*transform="translate\(([\d.]+) ([\d.]+)\)"', html
        )
    ]


def _crosses_a_node(segment: str, boxes: list[tuple[float, float]]) -> bool:
    """Whether the straight parts (H) of a routed edge run through a node's box."""
    numbers: list[Any] = re.findall(r"([MCH])([^MCH]*)", segment)
    x = y = 0.0
    for command, args in numbers:
        values = [float(v) for v in args.split()]
        if command == "H":
            x2 = values[0]
            for bx, by in boxes:
                if (
                    by < y < by + graph_drawing.NODE_HEIGHT
                    and bx < x2
                    and x < bx + graph_drawing.NODE_WIDTH
                ):
                    return True
            x = x2
        else:
            x, y = values[-2], values[-1]
    return False


@pytest.mark.django_db
def test_edges_that_skip_columns_run_between_the_nodes_of_the_columns_they_cross(
    admin_client: Client,
) -> None:
    # a chain of 5 beside a wide middle column, and a -> e skipping three columns.
    builder = baton.new("skips").add("a", Echo.new())
    builder.add_many("mid", [Echo.new()] * 6, deps="a")
    builder.add("b", Echo.new(), deps="mid").add("c", Echo.new(), deps="b")
    builder.add("e", Echo.new(), deps=["c", "a"])
    workflow = builder.insert()

    html = page(admin_client, workflow)

    boxes = _drawn_boxes(html)
    routed = [s for s in segments(html) if "H" in s]
    assert routed, "the long edge a -> e is routed through waypoints"
    assert not any(_crosses_a_node(s, boxes) for s in routed)
    assert len({box for box in boxes}) == len(boxes) == 10


# ------------------------------------------------------------------- structural folds
def test_big_graphs_fold_siblings_by_column_and_name_and_folds_expand() -> None:
    from types import SimpleNamespace

    from baton.live import drawing as graph_drawing

    def step(number: int, name: str, group: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(
            id=number,
            name=name,
            state="waiting",
            group=group,
            version=1,
            attempt=0,
            max_attempts=1,
            cost_usd=None,
            unpriced_calls=0,
        )

    # 200 chains split -> filter_i -> map_i -> merge, plus 30 "misc" leaves of the split.
    steps = [step(1, "split")]
    edges = []
    for i in range(200):
        steps += [step(2 + 2 * i, f"filter_{i}"), step(3 + 2 * i, f"map_{i}")]
        edges += [(1, 2 + 2 * i), (2 + 2 * i, 3 + 2 * i), (3 + 2 * i, 500)]
    steps.append(step(500, "merge"))
    steps += [step(600 + i, f"leaf{i}") for i in range(30)]  # no common word: "other"
    edges += [(1, 600 + i) for i in range(30)]

    drawing = graph_drawing.draw(steps, edges)
    assert {group.name: group.size for group in drawing.groups} == {
        "filter… (column 2)": 200,
        "map… (column 3)": 200,
        "other steps (column 2)": 30,
    }
    assert [node.name for node in drawing.nodes] == ["split", "merge"]
    assert sorted(drawing.folds["map… (column 3)"]) == [3 + 2 * i for i in range(200)]
    # split -> 2 folds, filter -> map, map -> merge: the folded edges, each once.
    assert drawing.edge_path.count("M") == 4

    opened = graph_drawing.draw(steps, edges, {"map… (column 3)"})
    assert {group.name for group in opened.groups} == {
        "filter… (column 2)",
        "other steps (column 2)",
    }
    assert len(opened.nodes) == 202 and opened.expanded == ["map… (column 3)"]
    # The page opened from the fold's link starts on its steps: their box, and only theirs.
    maps = [node for node in opened.nodes if node.name.startswith("map_")]
    x, y, width, height = opened.expanded_boxes["map… (column 3)"]
    assert (x, y) == (min(n.x for n in maps), min(n.y for n in maps))
    assert (x + width, y + height) == (
        max(n.x for n in maps) + graph_drawing.NODE_WIDTH,
        max(n.y for n in maps) + graph_drawing.NODE_HEIGHT,
    )
    assert list(opened.expanded_boxes) == ["map… (column 3)"]
    assert len(graph_drawing.draw(steps, edges, {"*"}).nodes) == len(steps)

    # Small graphs are drawn as they are.
    assert graph_drawing.draw(steps[:100], [e for e in edges if e[1] < 100]).groups == []


def test_grafted_steps_fold_apart_and_are_framed_by_their_grafting_step() -> None:
    from types import SimpleNamespace

    def step(number: int, name: str, grafted_by: int | None = None) -> SimpleNamespace:
        return SimpleNamespace(
            id=number,
            name=name,
            state="waiting",
            group=None,
            version=1,
            attempt=0,
            max_attempts=1,
            cost_usd=None,
            unpriced_calls=0,
            grafted_by_id=grafted_by,
        )

    # root -> 100 part_i (inserted) and root -> 100 part_j grafted by root -> join.
    steps = [step(1, "root")]
    steps += [step(10 + i, f"part_{i}") for i in range(100)]
    steps += [step(200 + i, f"part_g{i}", grafted_by=1) for i in range(100)]
    steps.append(step(999, "join"))
    edges = [(1, s.id) for s in steps[1:-1]] + [(s.id, 999) for s in steps[1:-1]]

    drawing = graph_drawing.draw(steps, edges)
    assert {group.name: group.size for group in drawing.groups} == {
        "part… (column 2)": 100,
        "part… (column 2, grafted by #1)": 100,
    }
    (frame,) = drawing.grafts
    assert (frame.by, frame.label) == (1, "grafted by root")
    grafted = next(g for g in drawing.groups if "grafted" in g.name)
    other = next(g for g in drawing.groups if "grafted" not in g.name)
    assert frame.x < grafted.x and grafted.x + graph_drawing.NODE_WIDTH < frame.x + frame.width
    assert frame.y < grafted.y and grafted.y + graph_drawing.NODE_HEIGHT < frame.y + frame.height
    assert not (frame.y < other.y < frame.y + frame.height)
    assert frame.y + frame.height <= drawing.height

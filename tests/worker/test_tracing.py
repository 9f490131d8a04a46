"""OpenTelemetry traces of a workflow run by a real worker (baton.tracing).

The worker exports its spans to a file (tests/testapp/tracing.py); this process records
the insert's span with the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk (the dev extra)")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.util._once import Once

import baton
from baton import tracing
from baton.testing import wait_for_workflow
from tests.testapp.tasks import Collect, Echo, Flaky
from tests.testapp.tracing import span_record


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK provider for this process, for this test only (what
    opentelemetry-test-utils' reset does, by hand)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(provider)
    yield memory
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def test_no_provider_records_nothing() -> None:
    assert not tracing.tracing_enabled()


@pytest.mark.worker
def test_a_workflow_is_a_trace_with_a_span_per_attempt_linked_to_its_deps(
    start_worker: Any, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    start_worker(concurrency=2, env={"BATON_TEST_OTEL_FILE": str(spans_file)})
    workflow = (
        baton.new("traced")
        .add("a", Echo.new(value=1))
        .add("b", Flaky.new(succeed_on=2), deps=["a"])
        .add("c", Echo.new(value="c"), deps=["a"])
        .add("d", Collect.new(), deps=["b", "c"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"

    (root,) = [span_record(s) for s in exporter.get_finished_spans()]
    assert root["name"] == "baton.workflow traced"
    assert workflow.trace_parent.startswith(f"00-{root['trace_id']}-{root['span_id']}-")

    # The worker ends an attempt's span just after committing its outcome, and the
    # workflow's finish span after that: wait for the file to hold them.
    import time

    deadline = time.monotonic() + 30
    while True:
        text = spans_file.read_text() if spans_file.exists() else ""
        spans = [json.loads(line) for line in text.splitlines()]
        names = [s["name"] for s in spans]
        if names.count("baton.step d") and "baton.workflow traced completed" in names:
            break
        assert time.monotonic() < deadline, names
        time.sleep(0.05)
    steps = [s for s in spans if s["name"].startswith("baton.step ")]
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}  # one trace
    assert {s["parent_id"] for s in spans} == {root["span_id"]}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in steps:
        by_name.setdefault(span["attributes"]["baton.step.name"], []).append(span)
    assert sorted((name, len(v)) for name, v in by_name.items()) == [
        ("a", 1),
        ("b", 2),
        ("c", 1),
        ("d", 1),
    ]
    first_b, second_b = sorted(by_name["b"], key=lambda s: s["attributes"]["baton.step.attempt"])
    assert first_b["attributes"]["baton.step.outcome"] == "retryable"
    assert first_b["status"] == "ERROR" and "exception" in first_b["events"]
    assert second_b["attributes"]["baton.step.outcome"] == "completed"
    a_span = by_name["a"][0]["span_id"]
    assert by_name["b"][0]["links"] == [a_span] and by_name["c"][0]["links"] == [a_span]
    # d links to the attempts that completed its deps: b's second, and c's.
    assert sorted(by_name["d"][0]["links"]) == sorted(
        [second_b["span_id"], by_name["c"][0]["span_id"]]
    )
    assert all(s["attributes"]["baton.step.queue_wait_s"] >= 0 for s in steps)
    (finish,) = [s for s in spans if s["name"] == "baton.workflow traced completed"]
    assert finish["attributes"]["baton.workflow.state"] == "completed"

"""Steps used by baton's own tests. Each records its perform() calls in PerformRun."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from asgiref.sync import sync_to_async
from procrastinate.contrib.django import app

import baton
import baton.llm
from tests.testapp import failpoints
from tests.testapp.models import PerformRun


def _record_start(job: baton.Job) -> PerformRun:
    return PerformRun.objects.create(
        workflow_id=job.workflow_id,
        step=job.step_name,
        attempt=job.attempt,
        started=time.time(),
        pid=os.getpid(),
    )


def _record_finish(run: PerformRun) -> None:
    run.finished = time.time()
    run.save(update_fields=["finished"])


class Echo(baton.Step):
    """Returns its args["value"] (or None), after sleeping args["sleep"] seconds."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        run = _record_start(job)
        if job.args.get("sleep"):
            time.sleep(job.args["sleep"])
        _record_finish(run)
        return job.args.get("value")


class Collect(baton.Step):
    """Returns every dependency result it can see: {"seen": job.results()}."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        run = _record_start(job)
        group = job.args.get("group")
        seen = job.results(group) if group else job.results()
        _record_finish(run)
        return {"seen": seen}


class Flaky(baton.Step):
    """Fails (raises) until attempt args["succeed_on"], then returns the attempt."""

    max_attempts = 3
    retry_backoff = 0.05
    retry_jitter = 0.0

    def perform(self, job: baton.Job) -> Any:
        run = _record_start(job)
        _record_finish(run)
        if job.attempt < job.args.get("succeed_on", 1):
            raise RuntimeError(f"flaky failure on attempt {job.attempt}")
        return {"attempt": job.attempt}


class ReturnsError(baton.Step):
    max_attempts = 2
    retry_backoff = 0.05
    retry_jitter = 0.0

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        return baton.Error("upstream said no")


class Snoozer(baton.Step):
    """Snoozes args["times"] times for args["seconds"], then returns its snooze count."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        done = PerformRun.objects.filter(workflow_id=job.workflow_id, step=job.step_name).count()
        if done <= job.args.get("times", 1):
            return baton.Snooze(job.args.get("seconds", 0.2))
        return {"runs": done, "attempt": job.attempt}


class Discarder(baton.Step):
    max_attempts = 5

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        raise baton.Discard(job.args.get("reason", "not today"))


class AsyncEcho(baton.Step):
    max_attempts = 1

    async def perform(self, job: baton.Job) -> Any:
        run = await sync_to_async(_record_start)(job)
        await asyncio.sleep(job.args.get("sleep", 0))
        await sync_to_async(_record_finish)(run)
        upstream = job.results()
        return {"value": job.args.get("value"), "upstream": upstream}


class BigResult(baton.Step):
    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        return {"blob": "x" * job.args["size"]}


class Unserialisable(baton.Step):
    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        return {"when": object()}


class Configured(baton.Step):
    """Carries non-default class options, to check that insert copies them to the step."""

    queue = "insert-options"
    priority = 7
    max_attempts = 4
    lock = "insert-options-lock"

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        return None


class FailsFirstRuns(baton.Step):
    """Raises on its first args["failures"] runs in a workflow (counted in PerformRun),
    then returns args["value"]. With max_attempts = 1 a failure discards the step."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        runs = PerformRun.objects.filter(workflow_id=job.workflow_id, step=job.step_name).count()
        if runs <= job.args.get("failures", 1):
            raise RuntimeError(f"failure on run {runs}")
        return job.args.get("value")


class DiscardsFirstRuns(baton.Step):
    """Discards itself on its first args["discards"] runs in a workflow, then returns
    args["value"]."""

    max_attempts = 3

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        runs = PerformRun.objects.filter(workflow_id=job.workflow_id, step=job.step_name).count()
        if runs <= job.args.get("discards", 1):
            raise baton.Discard(f"discarded on run {runs}")
        return job.args.get("value")


class CrashAt(baton.Step):
    """Returns {"step": name, "attempt": n} after sleeping args["sleep"] seconds. A worker
    armed by tests.testapp.failpoints dies inside perform() ("performing") or after it
    returned ("returned"), on the first attempt; max_attempts leaves room for re-runs."""

    max_attempts = 10

    def perform(self, job: baton.Job) -> Any:
        run = _record_start(job)
        failpoints.crash_point(job.step_name, job.attempt, "performing")
        if job.args.get("sleep"):
            time.sleep(job.args["sleep"])
        _record_finish(run)
        return {"step": job.step_name, "attempt": job.attempt}

    def on_result(self, job: baton.Job, value: Any) -> Any:
        failpoints.crash_point(job.step_name, job.attempt, "returned")
        return value


@app.task(name="tests.plain_procrastinate_task")
def plain_procrastinate_task() -> None:
    """Not a step: a plain Procrastinate task, finished by Procrastinate's own path."""


# --- LLM steps ------------------------------------------------------------------------
class FakeModelCall(baton.LLMStep):
    """Pretends to call args["model"] (default "gpt-4o-mini"): records args["calls"]
    calls by hand (keys from args["keys"], repeated keys included), fails until attempt
    args["succeed_on"], and returns {"text": ..., "llm_usage": ...} (unless
    args["no_result_usage"])."""

    queue = "llm"
    retry_backoff = 0.05
    retry_backoff_max = 0.1

    def perform(self, job: baton.Job) -> Any:
        run = _record_start(job)
        model = baton.model_for(job, job.args.get("model", "gpt-4o-mini"))
        for key in job.args.get("keys", []):
            job.record_usage(
                model=model, input_tokens=100, output_tokens=10, call_key=key, latency_ms=5
            )
        _record_finish(run)
        if job.attempt < job.args.get("succeed_on", 1):
            raise RuntimeError(f"model flaked on attempt {job.attempt}")
        if job.args.get("rate_limited_until", 0) >= job.step.snoozes + 1:
            raise baton.RateLimited(retry_after=0.05)
        result: dict[str, Any] = {"text": f"{job.step_name} by {model}"}
        if not job.args.get("no_result_usage"):
            result["llm_usage"] = {
                "model": model,
                "input_tokens": job.args.get("input_tokens", 1000),
                "output_tokens": job.args.get("output_tokens", 200),
                "cache_read_tokens": job.args.get("cache_read_tokens", 0),
            }
        return result


class SlowModelCall(baton.LLMStep):
    """An async model call that takes args["sleep"] seconds and records its usage."""

    queue = "llm"

    async def perform(self, job: baton.Job) -> Any:
        await asyncio.sleep(job.args.get("sleep", 0))
        return {
            "text": "slow",
            "llm_usage": baton.llm.Usage(
                model=job.args.get("model", "gpt-4o"),
                input_tokens=job.args.get("input_tokens", 1000),
                output_tokens=10,
            ),
        }


class HangingModelCall(SlowModelCall):
    """An async model call that outlives its timeout: cancelled at it, every attempt."""

    timeout = 0.3
    max_attempts = 2
    retry_backoff = 0.01


class DeadlineReport(baton.LLMStep):
    """A sync model call that reports the deadline it was given (its SDK's timeout)."""

    timeout = 30.0

    def perform(self, job: baton.Job) -> Any:
        return {"time_left": job.time_left(), "has_deadline": job.deadline is not None}


# --- debug capture steps ----------------------------------------------------------------
import dataclasses  # noqa: E402  (kept in this block: the file is appended to)


@dataclasses.dataclass
class FakeCompletion:
    """A stand-in for an SDK response object: a dataclass, converted field by field."""

    text: str
    model: str
    tokens: tuple[int, int]


def _debug_request(job: baton.Job) -> dict[str, Any]:
    return {
        "model": job.args.get("model", "gpt-4o-mini"),
        "messages": [{"role": "user", "content": job.args.get("prompt", "hello")}],
        "attempt": job.attempt,
    }


def _debug_result(job: baton.Job, text: str) -> dict[str, Any]:
    if job.attempt < job.args.get("succeed_on", 1):
        raise RuntimeError(f"model flaked on attempt {job.attempt}")
    return {
        "text": text,
        "llm_usage": {"model": job.args.get("model", "gpt-4o-mini"), "input_tokens": 10},
    }


class DebugModelCall(baton.LLMStep):
    """A sync model call that captures its upstream context, request and response with
    baton.debug; fails until attempt args["succeed_on"]."""

    queue = "llm"
    retry_backoff = 0.05
    retry_backoff_max = 0.1

    def perform(self, job: baton.Job) -> Any:
        from baton import debug

        debug.log_upstream_context(job, job.results())
        handle = debug.log_request(job, _debug_request(job))
        text = f"{job.step_name} answered on attempt {job.attempt}"
        debug.log_response(handle, FakeCompletion(text=text, model="gpt-4o-mini", tokens=(10, 2)))
        return _debug_result(job, text)


class AsyncDebugModelCall(baton.LLMStep):
    """DebugModelCall as an async perform(): awaits the alog_ forms, or (args["sync"])
    calls the sync forms on the event loop."""

    queue = "llm"
    retry_backoff = 0.05
    retry_backoff_max = 0.1

    async def perform(self, job: baton.Job) -> Any:
        from baton import debug

        text = f"{job.step_name} answered on attempt {job.attempt}"
        response = FakeCompletion(text=text, model="gpt-4o-mini", tokens=(10, 2))
        if job.args.get("sync"):
            debug.log_upstream_context(job, job.results())
            handle = debug.log_request(job, _debug_request(job))
            await asyncio.sleep(0)
            debug.log_response(handle, response)
        else:
            await debug.alog_upstream_context(job, job.results())
            handle = await debug.alog_request(job, _debug_request(job))
            await asyncio.sleep(0)
            await debug.alog_response(handle, response)
        return _debug_result(job, text)


class ReturnsRateLimit(baton.LLMStep):
    """Returns (not raises) a RateLimited on its first run, then succeeds."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        if job.step.snoozes == 0:
            return baton.RateLimited(retry_after=0.05)
        return "ok"


# --- grafting -----------------------------------------------------------------------
class ListUrls(baton.Step):
    """Grafts one Summarise step per URL of args["urls"], as the group "summaries"; fails
    (after grafting) until attempt args["succeed_on"]."""

    max_attempts = 3
    retry_backoff = 0.05
    retry_jitter = 0.0

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        urls = job.args["urls"]
        graft = job.graft()
        graft.add_many(
            job.args.get("group", "summaries"),
            {url: Summarise.new(url=url) for url in urls},
            deps=[job.step_name],
        )
        if job.attempt < job.args.get("succeed_on", 1):
            raise RuntimeError(f"failed after grafting, attempt {job.attempt}")
        return {"count": len(urls)}


class Summarise(baton.Step):
    """A grafted step: summarises args["url"], reading the grafting step's result."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        listed = job.result("list")
        return {"summary": f"summary of {job.args['url']}", "of": listed["count"]}


class Nest(baton.Step):
    """Grafts one more Nest under itself (named "nest<level + 1>") until args["levels"]:
    a chain of grafts, each one deeper (GRAFT_MAX_DEPTH)."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        level = job.args.get("level", 0)
        if level < job.args["levels"]:
            job.graft().add(
                f"nest{level + 1}",
                Nest.new(level=level + 1, levels=job.args["levels"]),
                deps=[job.step_name],
            )
        return {"level": level}


class GraftAt(baton.Step):
    """Grafts args["parts"] CrashAt steps (the group "parts", each depending on it) and
    returns {"parts": n}; a worker armed by tests.testapp.failpoints dies before
    perform() ("claimed"), inside it once the graft is built ("performing"), after it
    returned ("returned"), with the graft written but not committed ("grafted"), or
    after the commit ("committed"), on the first attempt."""

    max_attempts = 10

    def perform(self, job: baton.Job) -> Any:
        run = _record_start(job)
        parts = job.args["parts"]
        job.graft().add_many(
            "parts", {str(i): CrashAt.new() for i in range(parts)}, deps=[job.step_name]
        )
        failpoints.crash_point(job.step_name, job.attempt, "performing")
        _record_finish(run)
        return {"parts": parts, "attempt": job.attempt}

    def on_result(self, job: baton.Job, value: Any) -> Any:
        failpoints.crash_point(job.step_name, job.attempt, "returned")
        return value


# --- hostile outcomes (tests/integration/test_hostile.py) -----------------------------
def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


_HOSTILE: dict[str, Any] = {
    "nul_result": lambda: "a\x00b",
    "nul_key": lambda: {"a\x00": 1},
    "surrogate_result": lambda: {"text": "a\ud800b"},
    "deep_result": lambda: _deep(100_000),
    "nul_exception": lambda: ValueError("bad\x00value"),
    "nul_error": lambda: baton.Error("reason\x00here"),
    "nul_discard": lambda: baton.Discard("gone\x00now"),
    "surrogate_exception": lambda: ValueError("bad\udc80value"),
    "unprintable_exception": lambda: _BadStr(),
    "snooze_inf": lambda: baton.Snooze(float("inf")),
    "snooze_nan": lambda: baton.Snooze(float("nan")),
    "snooze_huge": lambda: baton.Snooze(1e12),
}


class Hostile(baton.Step):
    """Returns or raises the hostile outcome named by args["case"] (raised when it is an
    exception, or when building it raises)."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        _record_finish(_record_start(job))
        value = _HOSTILE[job.args["case"]]()
        if isinstance(value, Exception) and not isinstance(value, baton.Error | baton.Discard):
            raise value
        return value


class AwaitRelease(baton.Step):
    """An async step that waits, like a model call, until the file args["release"] exists."""

    max_attempts = 1

    async def perform(self, job: baton.Job) -> Any:
        while not os.path.exists(job.args["release"]):
            await asyncio.sleep(0.05)
        return {"n": job.args.get("n")}

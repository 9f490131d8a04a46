"""The research-brief workflow: read local sources, summarise them with three models in
parallel, synthesise the summaries, tag keywords, rate the sources, compile a brief.

    fetch_sources -+-> summaries[gpt-4o-mini] --------------+
                   +-> summaries[claude-3-5-haiku-latest] --+-> summaries_synthesis -+
                   +-> summaries[gemini-1.5-flash] ---------+                        |
                   +-> keywords (an in-house model: unpriced) -----------------------+
                   +-> credibility (no model: a plain step) -------------------------+
                                                                 compile_brief <-----+

Model calls go to the fake provider in providers.py: no network, no API key, real token
counts, priced by baton's default pricing (genai-prices). The workflow has a budget: once
its recorded cost reaches it, LLM steps that have not started are discarded ("budget
exceeded"); the plain steps still run, and compile_brief, which accepts missing parts,
compiles what there is.
"""

from __future__ import annotations

import datetime
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import baton
import baton.debug
from example_project.research import providers

if TYPE_CHECKING:
    from baton.models import Workflow

SOURCES_DIR = Path(__file__).resolve().parent / "sources"
DEFAULT_TOPIC = "Air-source heat pumps in cold climates"
SUMMARY_MODELS = ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-1.5-flash"]
SYNTHESIS_MODEL = "gpt-4o"
# An in-house model that genai-prices has no price for: its calls are stored unpriced.
KEYWORD_MODEL = "acme-tagger-1"
DEFAULT_BUDGET_USD = Decimal("0.05")

SUMMARY_SYSTEM = (
    "You are a research assistant. Summarise what the sources below say about "
    "{topic!r} in a few sentences. Keep figures; do not add facts."
)
SYNTHESIS_SYSTEM = (
    "You are an editor. Several models summarised the same sources about {topic!r}; "
    "merge their summaries into one paragraph that keeps what they agree on."
)
KEYWORD_SYSTEM = "List the keywords of the text below, most important first, comma-separated."

# How much each kind of source is trusted before anything else is known about it.
KIND_WEIGHTS = {"peer-reviewed": 0.8, "government report": 0.7, "news": 0.5, "vendor blog": 0.25}

# The parts compile_brief puts together (the steps it depends on besides fetch_sources).
PARTS = ("summaries_synthesis", "keywords", "credibility")


# ------------------------------------------------------------------------- plain steps
class FetchSources(baton.Step):
    """Read the sources: local text files with ``Key: value`` headers (sources/)."""

    queue = "default"

    def perform(self, job):
        names = job.args.get("sources") or sorted(p.name for p in SOURCES_DIR.glob("*.txt"))
        return {
            "topic": job.args["topic"],
            # Path(name).name: a source name never reaches outside the directory.
            "sources": [read_source(SOURCES_DIR / Path(name).name) for name in names],
        }


def read_source(path: Path) -> dict[str, Any]:
    """One source file as a dict: its headers (lower-cased keys), ``name`` and ``text``."""
    head, _, body = path.read_text(encoding="utf-8").partition("\n\n")
    source: dict[str, Any] = {"name": path.stem}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        source[key.strip().lower()] = value.strip()
    source["cites"] = int(source.get("cites", 0))
    source["text"] = body.strip()
    return source


class Credibility(baton.Step):
    """Rate each source from what it is (no model call): its kind, citations, age."""

    queue = "default"

    def perform(self, job):
        # A fixed date, so that the demo's ratings do not change as time passes.
        as_of = datetime.date.fromisoformat(job.args.get("as_of", "2024-06-01"))
        ratings = {}
        for source in job.result("fetch_sources")["sources"]:
            kind = source.get("kind", "")
            score = KIND_WEIGHTS.get(kind, 0.3) + min(source["cites"], 40) / 400
            published = datetime.date.fromisoformat(source.get("published", "1970-01-01"))
            if (as_of - published).days > 365:
                score -= 0.05
            score = round(min(score, 1.0), 2)
            verdict = "high" if score >= 0.75 else "medium" if score >= 0.5 else "low"
            ratings[source["name"]] = {
                "score": score,
                "verdict": verdict,
                "why": f"{kind or 'unknown kind'}, {source['cites']} citation(s), "
                f"published {published.isoformat()}",
            }
        return {"ratings": ratings}


class CompileBrief(baton.Step):
    """Put the brief together from whatever parts exist.

    Added with ignore_discarded and ignore_cancelled: a part that was skipped (the budget
    ran out, a model kept failing) is listed under "missing" instead of stopping the
    brief.
    """

    queue = "default"

    def perform(self, job):
        topic = job.args["topic"]
        parts = job.results()  # {dependency name: result}, for those that stored one
        missing = [name for name in PARTS if name not in parts]
        sources = parts["fetch_sources"]["sources"]
        ratings = parts.get("credibility", {}).get("ratings", {})

        lines = [f"# Research brief: {topic}", ""]
        synthesis = parts.get("summaries_synthesis")
        if synthesis:
            by = ", ".join(synthesis["based_on"])
            credit = f"_Synthesised by {synthesis['model']} from summaries by {by}._"
            lines += [synthesis["synthesis"], "", credit, ""]
        else:
            lines += ["_No synthesis: not every summary was available._", ""]
        if "keywords" in parts:
            lines += [f"**Keywords:** {', '.join(parts['keywords']['keywords'])}", ""]
        lines += ["## Sources", ""]
        for source in sources:
            rating = ratings.get(source["name"])
            verdict = f": credibility {rating['verdict']} ({rating['score']})" if rating else ""
            lines.append(f"- {source['title']}, {source['publisher']}{verdict}")
        if missing:
            lines += ["", f"Missing parts: {', '.join(missing)}."]
        return {
            "title": f"Research brief: {topic}",
            "markdown": "\n".join(lines) + "\n",
            "missing": missing,
        }


# --------------------------------------------------------------------------- LLM steps
def sources_prompt(fetched: dict[str, Any]) -> str:
    return "\n\n".join(
        f"Source: {source['title']} ({source['publisher']}, {source['published']})\n"
        f"{source['text']}"
        for source in fetched["sources"]
    )


class Summarise(baton.LLMStep):
    """Summarise the sources with the model fan_out gave this step.

    The usage goes back in the result's "llm_usage" key: baton strips it before the result
    is stored and records it in the ledger.
    """

    # The defaults are 2 s and 120 s; a demo should not keep anyone waiting that long.
    retry_backoff = 0.5
    retry_backoff_max = 10.0

    async def perform(self, job):
        model = baton.model_for(job, SUMMARY_MODELS[0])
        fetched = job.result("fetch_sources")
        # The demo's simulated rate limit: the named model refuses its first call. The
        # retry-after-ms header turns that into a snooze, which spends no attempt.
        busy = model == job.args.get("rate_limited_model") and job.step.snoozes == 0
        response = await providers.complete(
            model,
            sources_prompt(fetched),
            system=SUMMARY_SYSTEM.format(topic=fetched["topic"]),
            max_tokens=160,
            timeout=job.time_left(),  # what is left of this attempt's 120 s
            busy=busy,
        )
        return {
            "model": model,
            "summary": providers.text_of(response),
            "llm_usage": providers.usage_of(response),
        }


class Synthesise(baton.LLMStep):
    """Merge the summaries, which job.results("summaries") returns keyed by model.

    With debug capture on (``--debug``, or ``BATON["DEBUG"]``), what it read upstream, the
    request and the response are stored and shown in the admin.
    """

    retry_backoff = 0.5
    retry_backoff_max = 10.0

    async def perform(self, job):
        model = baton.model_for(job, SYNTHESIS_MODEL)
        summaries = job.results("summaries")  # {"gpt-4o-mini": {...}, ...}
        await baton.debug.alog_upstream_context(job, summaries)
        request = {
            "model": model,
            "system": SYNTHESIS_SYSTEM.format(topic=job.args["topic"]),
            "prompt": "\n\n".join(
                f"[{name}]\n{result['summary']}" for name, result in sorted(summaries.items())
            ),
            "max_tokens": 220,
        }
        handle = await baton.debug.alog_request(job, request)
        response = await providers.complete(**request, timeout=job.time_left())
        await baton.debug.alog_response(handle, response)
        return {
            "model": model,
            "synthesis": providers.text_of(response),
            "based_on": sorted(summaries),
            "llm_usage": providers.usage_of(response),
        }


class Keywords(baton.LLMStep):
    """Tag the sources with keywords, recording the call by hand (job.record_usage)."""

    retry_backoff = 0.5
    retry_backoff_max = 10.0

    async def perform(self, job):
        model = baton.model_for(job, KEYWORD_MODEL)  # set by configure_models
        started = time.monotonic()
        response = await providers.complete(
            model,
            sources_prompt(job.result("fetch_sources")),
            system=KEYWORD_SYSTEM,
            max_tokens=40,
            timeout=job.time_left(),
        )
        usage = providers.usage_of(response)
        # By hand, to add the latency measured here. Once per call key and attempt:
        # recording "tagger" again in this attempt would change nothing.
        job.record_usage(
            model=usage.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            latency_ms=(time.monotonic() - started) * 1000,
            call_key="tagger",
        )
        words = [word.strip() for word in providers.text_of(response).split(",")]
        return {"model": model, "keywords": [word for word in words if word]}


# ---------------------------------------------------------------------------- building
def build_research_brief(
    topic: str = DEFAULT_TOPIC,
    *,
    budget_usd: Decimal | None = DEFAULT_BUDGET_USD,
    debug: bool = False,
    rate_limited_model: str | None = None,
    sources: list[str] | None = None,
) -> Workflow:
    """Build and insert the research-brief workflow; returns the inserted Workflow.

    ``budget_usd``: stop LLM steps once this much was spent (None: no budget).
    ``rate_limited_model``: that summary model refuses its first call (a snooze).
    ``sources``: file names in sources/ (default: every .txt file there).
    """
    args: dict[str, Any] = {"topic": topic}
    if rate_limited_model is not None:
        args["rate_limited_model"] = rate_limited_model
    wf = (
        baton.new(workflow_name="research_brief", budget_usd=budget_usd, debug=debug)
        .add("fetch_sources", FetchSources.new(topic=topic, sources=sources or []))
        .fan_out(
            "summaries",
            Summarise,
            models=SUMMARY_MODELS,
            args=args,
            deps=["fetch_sources"],
            synthesize_with=Synthesise,
            synthesize_model=SYNTHESIS_MODEL,
        )
        .add("keywords", Keywords.new(), deps=["fetch_sources"])
        .add("credibility", Credibility.new(), deps=["fetch_sources"])
        .add(
            "compile_brief",
            CompileBrief.new(topic=topic),
            deps=["fetch_sources", *PARTS],
            ignore_discarded=True,
            ignore_cancelled=True,
        )
        .configure_models({"keywords": KEYWORD_MODEL})
    )
    return wf.insert()

"""Debug capture for LLM steps (SPEC section 8); see baton.llm.debug for what is stored,
when, and on which thread.

    handle = baton.debug.log_request(job, request)
    baton.debug.log_response(handle, response)
    baton.debug.log_upstream_context(job, job.results())

In an async perform(), await the ``alog_`` forms.
"""

from baton.llm.debug import (
    NULL_HANDLE,
    DebugHandle,
    alog_request,
    alog_response,
    alog_upstream_context,
    log_request,
    log_response,
    log_upstream_context,
)

__all__ = [
    "NULL_HANDLE",
    "DebugHandle",
    "alog_request",
    "alog_response",
    "alog_upstream_context",
    "log_request",
    "log_response",
    "log_upstream_context",
]

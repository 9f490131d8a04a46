"""Small formatting helpers shared by the admin and the live pages."""

from __future__ import annotations


def format_seconds(seconds: float) -> str:
    """A duration for people: "4.2 s", "3m 07s", "1h 02m 03s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"

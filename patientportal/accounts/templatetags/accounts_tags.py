"""Template filters of the sign-in pages."""

from __future__ import annotations

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration_minutes(value: timedelta | None) -> str:
    """timedelta(minutes=15) -> "15 minutes"."""
    if not isinstance(value, timedelta):
        return ""
    minutes = max(1, round(value.total_seconds() / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"

"""Safe placeholders for staff-written reminder text.

Not Django templates: staff input is never evaluated. A placeholder is `{name}` with a name from
`PLACEHOLDERS`; `{{` and `}}` are literal braces. Anything else is refused when the template is
saved, so rendering cannot fail or reach attributes, filters or tags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS: dict[str, str] = {
    "first_name": "The patient's first name (in the app inbox; never in a generic push)",
    "app_name": "The app's name",
    "reminder_date": "The reminder's local date, e.g. 9 March 2026",
}

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template uses something other than the whitelisted placeholders."""


def placeholders_in(text: str) -> list[str]:
    """Every placeholder name used in `text`; raises TemplateError on anything not allowed."""
    names: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise TemplateError("A single '{' or '}' must be written '{{' or '}}'.")
        if name not in PLACEHOLDERS:
            allowed = ", ".join("{" + key + "}" for key in PLACEHOLDERS)
            raise TemplateError(f"Unknown placeholder {{{name[:40]}}}. Allowed: {allowed}.")
        names.append(name)
    return names


def render(text: str, context: Mapping[str, str]) -> str:
    """Substitutes whitelisted placeholders; unknown or missing ones become empty text."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name is None or name not in PLACEHOLDERS:
            return ""
        return str(context.get(name, ""))

    return _TOKEN.sub(replace, text)

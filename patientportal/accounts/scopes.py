"""Plain-language descriptions of the API scopes, for the approval page."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ScopeDescription:
    name: str
    title: str
    detail: str


SCOPE_DETAILS: dict[str, tuple[str, str]] = {
    "account": (
        "Your account",
        "See your name, e-mail address and time zone, change them, and ask to delete the account.",
    ),
    "consent": (
        "Your consents",
        "See the consents you gave, give new ones and withdraw them.",
    ),
    "connections": (
        "Your health-system connections",
        "Connect your record at a hospital or clinic, keep it up to date, and disconnect it.",
    ),
    "records:read": (
        "Your health records",
        "Read the records copied from the health systems you connected.",
    ),
    "records:export": (
        "Exporting your health records",
        "Download a complete copy of your records.",
    ),
    "audit:read": (
        "Who looked at your data",
        "See the log of every access to your data.",
    ),
    "reminders": (
        "Reminders",
        "Receive reminders and manage them.",
    ),
}


def describe_scopes(scopes: list[str]) -> list[ScopeDescription]:
    described = []
    for name in scopes:
        title, detail = SCOPE_DETAILS.get(name, (settings.API_SCOPES.get(name, name), ""))
        described.append(ScopeDescription(name=name, title=title, detail=detail))
    return described

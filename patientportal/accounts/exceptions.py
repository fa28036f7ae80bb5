"""Errors of the accounts app, in the project's one error format."""

from __future__ import annotations

from patientportal.core.errors import NotFound


class SessionNotFound(NotFound):
    default_code = "session_not_found"
    default_message = "No such signed-in session."

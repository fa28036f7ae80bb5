"""API permissions: OAuth scopes (django-oauth-toolkit) and "the caller is a patient"."""

from __future__ import annotations

from typing import Any

from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request


class IsPatient(BasePermission):
    """The authenticated user has a patient profile."""

    message = "This operation is for patients."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "patient"))


class ScopeRequired(TokenHasScope):
    """django-oauth-toolkit's scope check, denying with the stable code `insufficient_scope`."""

    message = "The access token does not carry the scope this operation needs."
    code = "insufficient_scope"


PATIENT_API = [IsAuthenticated, IsPatient, ScopeRequired]
"""Permission classes for a patient endpoint; the view sets `required_scopes` (every one needed)."""

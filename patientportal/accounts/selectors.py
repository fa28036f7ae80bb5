"""Reads of the accounts app."""

from __future__ import annotations

from typing import Any

from django.db.models import Min, OuterRef, QuerySet, Subquery
from oauth2_provider.models import RefreshToken

from .models import User


def oauth_session_list(*, user: User) -> QuerySet[RefreshToken]:
    """The user's live app sessions: one live refresh token per token family.

    Annotated with `signed_in_at` (the family's first token). Token values are never selected.
    """
    first_in_family: Any = (
        RefreshToken.objects.filter(token_family=OuterRef("token_family"))
        .values("token_family")
        .annotate(first=Min("created"))
        .values("first")
    )
    return (
        RefreshToken.objects.filter(user=user, revoked__isnull=True)
        .exclude(token_family=None)
        .select_related("application", "access_token")
        .annotate(signed_in_at=Subquery(first_in_family))
        .only(
            "id",
            "token_family",
            "created",
            "application__name",
            "application__client_id",
            "access_token__scope",
            "access_token__expires",
        )
    )

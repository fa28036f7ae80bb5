"""Consent errors (stable codes the mobile app branches on)."""

from __future__ import annotations

from patientportal.core.errors import Conflict, NotFound, PermissionDenied


class ConsentRequired(PermissionDenied):
    """The patient has not (or no longer) consented to the purpose this operation needs."""

    default_code = "consent_required"
    default_message = "The patient's consent for this purpose is required."


class ConsentDocumentNotCurrent(Conflict):
    """The grant names a document version that is not the current one for its purpose."""

    default_code = "consent_version_not_current"
    default_message = "This version of the consent document is not the current one."


class PurposeNotOffered(NotFound):
    """The purpose is not enabled on this server or has no current document."""

    default_code = "purpose_not_offered"
    default_message = "This purpose is not offered."

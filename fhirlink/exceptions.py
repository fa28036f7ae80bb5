"""fhirlink's errors. Messages are fixed strings: never a token, a code, PHI or a server body."""

from __future__ import annotations

from patientportal.core.errors import ApplicationError, Conflict, NotFound, ServiceUnavailable


class HealthSystemNotFound(NotFound):
    default_code = "health_system_not_found"
    default_message = "No such health system, or it is not available."


class HealthSystemNotAvailableYet(Conflict):
    """An operator holds the health system (its security review is not done): nothing is
    deleted, patients just cannot connect it yet."""

    default_code = "health_system_not_available_yet"
    default_message = "This health system is not available yet."


class ConnectionNotFound(NotFound):
    default_code = "connection_not_found"
    default_message = "No such connection."


class EhrUnavailable(ServiceUnavailable):
    """The health system's endpoints could not be reached (retry later)."""

    default_code = "ehr_unavailable"
    default_message = "The health system could not be reached. Try again later."


class EhrMisconfigured(ApplicationError):
    """Discovery or registration makes a launch impossible (operators must act)."""

    status_code = 502
    default_code = "ehr_misconfigured"
    default_message = "The health system's configuration does not allow connecting."


class UnsupportedFhirVersion(EhrMisconfigured):
    default_code = "ehr_unsupported_fhir_version"
    default_message = "The health system does not serve FHIR R4 (4.0.x)."


class ConnectionGone(Conflict):
    default_code = "connection_disconnected"
    default_message = "This connection is disconnected."


class ReauthRequired(Conflict):
    """The grant is gone (invalid_grant, revoked, expired): the patient must reconnect."""

    default_code = "connection_needs_reauth"
    default_message = "The health system needs the patient to reconnect."


class RefreshThrottled(ApplicationError):
    """A refresh ran less than a minute ago and the access token is no longer valid."""

    status_code = 429
    default_code = "refresh_throttled"
    default_message = "The token was refreshed less than a minute ago. Try again shortly."


class RefreshInProgress(ApplicationError):
    status_code = 409
    default_code = "refresh_in_progress"
    default_message = "Another worker is refreshing this connection."


class LaunchRefused(Exception):
    """The callback cannot complete; `outcome` is the code sent back to the app."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome

    def __repr__(self) -> str:
        return f"LaunchRefused({self.outcome!r})"

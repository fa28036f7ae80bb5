"""Writes of the accounts app: sign-up, e-mail verification, profile, sessions, deletion."""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from functools import cache, partial

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from django.utils.module_loading import import_string
from oauth2_provider.models import AccessToken, Grant, IDToken, RefreshToken

from . import tasks
from .exceptions import SessionNotFound
from .models import AccountDeletionRequest, Patient, User
from .tokens import email_verification_token

logger = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = "UTC"


@cache
def available_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone_is_valid(name: str) -> bool:
    return name in available_time_zones()


def normalize_email(email: str) -> str:
    return email.strip().lower()


# --- Sign-up and e-mail verification -------------------------------------------------------------


def user_sign_up(
    *,
    email: str,
    password: str,
    given_name: str = "",
    family_name: str = "",
    time_zone: str = DEFAULT_TIME_ZONE,
) -> User | None:
    """Creates a patient account and queues the verification e-mail (after commit).

    The password has been checked against the validators by the caller. When the address is
    already registered nothing is created: the owner of the address gets an "you already have
    an account" e-mail instead, and the caller shows the same page as for a new account, so
    sign-up does not reveal which addresses exist. Returns the new user, or None.
    """
    email = normalize_email(email)
    if not time_zone_is_valid(time_zone):
        time_zone = DEFAULT_TIME_ZONE
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                email=email,
                password=password,
                first_name=given_name.strip(),
                last_name=family_name.strip(),
            )
            Patient.objects.create(user=user, time_zone=time_zone)
    except IntegrityError:
        # Spend the time a new account would have spent hashing, then tell the real owner.
        make_password(password)
        existing = User.objects.filter(email__iexact=email).first()
        if existing is not None and existing.is_active:
            _enqueue_email(tasks.ACCOUNT_EXISTS, existing.pk)
        return None
    logger.info("Patient account created: user %s", user.pk)
    _enqueue_email(tasks.VERIFY_EMAIL, user.pk)
    return user


def _enqueue_email(kind: str, user_id: int) -> None:
    transaction.on_commit(lambda: tasks.send_account_email.delay(kind, user_id))


def email_verification_send(*, user: User) -> bool:
    """Queues a new verification link. Returns False when there is nothing to send."""
    if user.email_verified_at is not None or not user.is_active:
        return False
    _enqueue_email(tasks.VERIFY_EMAIL, user.pk)
    return True


def user_from_uidb64(uidb64: str) -> User | None:
    try:
        pk = int(force_str(urlsafe_base64_decode(uidb64)))
    except (TypeError, ValueError, OverflowError):
        return None
    return User.objects.filter(pk=pk, is_active=True).first()


def email_verify(*, uidb64: str, token: str) -> User | None:
    """Marks the address verified when the link is genuine and fresh. Returns the user or None."""
    user = user_from_uidb64(uidb64)
    if user is None or not email_verification_token.check_token(user, token):
        return None
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if locked.email_verified_at is None:
            locked.email_verified_at = timezone.now()
            locked.save(update_fields=["email_verified_at"])
    logger.info("E-mail address verified: user %s", user.pk)
    return locked


# --- Profile ---------------------------------------------------------------------------------


def patient_profile_update(
    *,
    patient: Patient,
    given_name: str | None = None,
    family_name: str | None = None,
    time_zone: str | None = None,
) -> Patient:
    """Updates the names (on the user) and the time zone (on the patient); None = unchanged."""
    user = patient.user
    user_fields: list[str] = []
    if given_name is not None:
        user.first_name = given_name.strip()
        user_fields.append("first_name")
    if family_name is not None:
        user.last_name = family_name.strip()
        user_fields.append("last_name")
    if time_zone is not None and not time_zone_is_valid(time_zone):
        raise ValueError("Unknown time zone")  # the serializer has refused it already
    with transaction.atomic():
        if user_fields:
            user.save(update_fields=user_fields)
        if time_zone is not None:
            patient.time_zone = time_zone
            patient.save(update_fields=["time_zone"])
    return patient


# --- OAuth sessions (the mobile app's sign-ins) ------------------------------------------------


def oauth_tokens_revoke_for_user(*, user: User) -> int:
    """Revokes every OAuth grant, access and refresh token of the user.

    Refresh tokens are marked revoked (kept as tombstones, so a replay is still recognised as
    reuse), access tokens and pending authorization codes are deleted. Returns the number of
    sessions (refresh-token families) that were live.
    """
    with transaction.atomic():
        live = RefreshToken.objects.filter(user=user, revoked__isnull=True)
        families = set(live.exclude(token_family=None).values_list("token_family", flat=True))
        for family in families:
            RefreshToken.revoke_family(family)
        sessions = len(families)
        for orphan in RefreshToken.objects.filter(user=user, revoked__isnull=True):
            orphan.revoke()
            sessions += 1
        AccessToken.objects.filter(user=user).delete()
        IDToken.objects.filter(user=user).delete()
        Grant.objects.filter(user=user).delete()
    logger.info("Revoked %s OAuth session(s) of user %s", sessions, user.pk)
    return sessions


def oauth_session_revoke(*, user: User, session_id: uuid.UUID) -> None:
    """Signs one app session out: revokes the refresh-token family and its access tokens."""
    if not RefreshToken.objects.filter(
        user=user, token_family=session_id, revoked__isnull=True
    ).exists():
        raise SessionNotFound()
    RefreshToken.revoke_family(session_id)
    logger.info("User %s revoked one OAuth session", user.pk)


# --- Account deletion ------------------------------------------------------------------------


def account_deletion_request(*, user: User) -> AccountDeletionRequest:
    """Records the patient's request to delete the account and closes the account at once.

    Every OAuth token is revoked and sign-in is closed (`is_active` False, which also ends web
    sessions and stops password resets). The erasure of the data is done later by operators
    and jobs (`ACCOUNT_DELETION_REQUEST_HANDLERS` are told after commit, with `patient_id=`).
    Asking again returns the open request.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        patient = Patient.objects.filter(user=locked).first()
        open_request = AccountDeletionRequest.objects.filter(
            user=locked, status=AccountDeletionRequest.Status.PENDING
        ).first()
        sessions = oauth_tokens_revoke_for_user(user=locked)
        if open_request is None:
            open_request = AccountDeletionRequest.objects.create(
                user=locked,
                patient_id=patient.pk if patient else None,
                requested_at=now,
                sessions_revoked=sessions,
            )
        update_fields = ["is_active"]
        if locked.deletion_requested_at is None:
            locked.deletion_requested_at = now
            update_fields.append("deletion_requested_at")
        locked.is_active = False
        locked.save(update_fields=update_fields)
        if patient is not None:
            for path in settings.ACCOUNT_DELETION_REQUEST_HANDLERS:
                transaction.on_commit(
                    partial(_run_deletion_handler, path=path, patient_id=str(patient.pk))
                )
    logger.info("Account deletion requested: user %s, request %s", user.pk, open_request.pk)
    return open_request


def _run_deletion_handler(*, path: str, patient_id: str) -> None:
    """One app's reaction to a deletion request. A failing handler is logged, not raised: the
    request is recorded (and stays pending for the operators) whatever the apps do."""
    try:
        import_string(path)(patient_id=patient_id)
    except Exception as exc:
        logger.error("Deletion-request handler %s failed: %s", path, type(exc).__name__)


def password_reset_completed(*, user: User) -> None:
    """After a password reset every app must sign in again with the new password.

    The reset link reached the mailbox, which also proves the address: it counts as verified.
    """
    oauth_tokens_revoke_for_user(user=user)
    if user.email_verified_at is None:
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])

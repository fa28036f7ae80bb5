"""Attacks on the admin's least privilege, one test per attack (issue #19, item 3).

An outside assessment found that the Operator role (no PHI by design) could set any care-team
member's or patient's password in the admin and then sign in as them and open a chart, enrol a
second factor for any user, and that TOTP seeds were shown to superusers and operators. These
tests walk every admin URL as each staff role and try each sensitive action:

- setting another user's password (`/admin/accounts/user/<id>/password/`, the change form's link);
- enrolling, replacing, viewing or removing a second factor (otp_totp, otp_static);
- raising privileges (superuser, staff, groups, permissions; group editing; adding users; bulk
  actions), and taking an account over by changing the e-mail address its resets go to;
- seeing a TOTP seed, a backup code or a password hash anywhere.

Requirements: OWASP ASVS 5.0 V8 Authorization (8.2.1 function-level, 8.2.3 field-level access),
V6 Authentication (6.2.3 a password change asks for the current password, 6.4.4 / 6.5.x factor
lifecycle), HIPAA 45 CFR 164.312(a)(1) access control and 164.312(d) person or entity
authentication.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, reverse
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from patientportal.accounts import roles
from patientportal.accounts.models import Patient, User
from tests.factories import PatientFactory, StaffFactory, UserFactory
from tests.patientportal.test_careteams import _admin_patterns, _url, client_for

pytestmark = pytest.mark.django_db

SUPERUSER = "superuser"
OPERATOR = "operator"
CARE_TEAM = "care team"
ENGAGEMENT = "engagement"
AUDITOR = "auditor"
PLAIN_STAFF = "plain staff"
PATIENT = "patient (not staff)"
STAFF_ROLES = (SUPERUSER, OPERATOR, CARE_TEAM, ENGAGEMENT, AUDITOR, PLAIN_STAFF)
NON_SUPERUSERS = (OPERATOR, CARE_TEAM, ENGAGEMENT, AUDITOR, PLAIN_STAFF)
ALL_ROLES = (*STAFF_ROLES, PATIENT)
_GROUP_OF = {
    OPERATOR: roles.OPERATOR,
    CARE_TEAM: roles.CARE_TEAM,
    ENGAGEMENT: roles.ENGAGEMENT,
    AUDITOR: roles.AUDITOR,
}
PASSWORD = "Old-password-of-staff-2026"
NEW_PASSWORD = "Attacker-chosen-password-99"
SEED_HEX = "3132333435363738393031323334353637383930"  # RFC 6238's test seed
STATIC_CODE = "backupcode77"


@dataclass
class Cast:
    actors: dict[str, User]  # role -> the user acting in it
    patient: Patient
    care_member: User  # the victim: a care-team member (signing in as them opens charts)
    root: User  # another superuser
    peers: dict[str, User]  # another operator and another auditor
    totp: TOTPDevice  # the victim's authenticator
    static: StaticDevice  # the victim's backup codes

    def targets(self) -> dict[str, User]:
        return {
            "care-team member": self.care_member,
            "patient": self.patient.user,
            "another operator": self.peers[OPERATOR],
            "another auditor": self.peers[AUDITOR],
            "superuser": self.root,
        }


def make_cast() -> Cast:
    actors: dict[str, User] = {}
    for role in STAFF_ROLES:
        if role == SUPERUSER:
            user = StaffFactory.create(is_superuser=True, email="root-actor@example.test")
        else:
            user = StaffFactory.create(role=_GROUP_OF.get(role))
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
        actors[role] = user
    patient = PatientFactory.create()
    patient.user.set_password(PASSWORD)
    patient.user.save(update_fields=["password"])
    actors[PATIENT] = patient.user
    care_member = StaffFactory.create(role=roles.CARE_TEAM, email="victim-nurse@example.test")
    care_member.set_password(PASSWORD)
    care_member.save(update_fields=["password"])
    root = User.objects.create_superuser("root@example.test", PASSWORD)
    totp = TOTPDevice.objects.create(user=care_member, name="phone", key=SEED_HEX, confirmed=True)
    static = StaticDevice.objects.create(user=care_member, name="backup", confirmed=True)
    StaticToken.objects.create(device=static, token=STATIC_CODE)
    peers = {role: StaffFactory.create(role=_GROUP_OF[role]) for role in (OPERATOR, AUDITOR)}
    for peer in peers.values():
        peer.set_password(PASSWORD)
        peer.save(update_fields=["password"])
    return Cast(actors, patient, care_member, root, peers, totp, static)


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


def as_role(cast: Cast, role: str) -> Client:
    return client_for(User.objects.get(pk=cast.actors[role].pk))


def secrets_of(cast: Cast) -> list[str]:
    """Strings no admin page may show to anyone."""
    key = bytes.fromhex(SEED_HEX)
    found = [
        SEED_HEX,
        SEED_HEX.upper(),
        base64.b32encode(key).decode(),
        base64.b32encode(key).decode().rstrip("="),
        STATIC_CODE,
    ]
    for device in TOTPDevice.objects.all():
        found += [device.key, base64.b32encode(device.bin_key).decode().rstrip("=")]
    found += list(StaticToken.objects.values_list("token", flat=True))
    for password in User.objects.values_list("password", flat=True):
        found.append(password.rsplit("$", 1)[-1])  # the hash (Django's widget masks it)
    return sorted(set(found))


def security_state() -> dict[str, Any]:
    """Everything that decides who can sign in as whom and with which privileges."""
    return {
        "users": sorted(
            User.objects.values_list(
                "pk", "email", "password", "is_active", "is_staff", "is_superuser"
            )
        ),
        "user_groups": sorted(User.groups.through.objects.values_list("user_id", "group_id")),
        "user_permissions": sorted(
            User.user_permissions.through.objects.values_list("user_id", "permission_id")
        ),
        "groups": sorted(Group.objects.values_list("pk", "name")),
        "group_permissions": sorted(
            Group.permissions.through.objects.values_list("group_id", "permission_id")
        ),
        "totp": sorted(TOTPDevice.objects.values_list("pk", "user_id", "name", "key", "confirmed")),
        "static": sorted(StaticDevice.objects.values_list("pk", "user_id", "name", "confirmed")),
        "static_tokens": sorted(StaticToken.objects.values_list("device_id", "token")),
    }


def body_of(response: Any) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode("utf-8", "replace")


LOGIN = "/admin/login/"


# --- The walk ------------------------------------------------------------------------------------

# Admin URL name -> who may GET it (200); every other staff role gets 403, a non-staff user the
# login page. None: superusers only. Names not listed are walked for secrets and server errors.
SENSITIVE_GET: dict[str, frozenset[str]] = {
    # Setting another user's password.
    "auth_user_password_change": frozenset({SUPERUSER}),
    # Accounts: adding one chooses its password; deleting; the change form (operators may rename
    # and deactivate, with privileges, e-mail and password read-only).
    "accounts_user_add": frozenset({SUPERUSER}),
    "accounts_user_delete": frozenset({SUPERUSER}),
    "accounts_user_change": frozenset({SUPERUSER, OPERATOR}),
    "accounts_user_changelist": frozenset({SUPERUSER, OPERATOR}),
    "accounts_user_history": frozenset({SUPERUSER, OPERATOR}),
    # Roles' permission sets: operators read them, only superusers change them.
    "auth_group_add": frozenset({SUPERUSER}),
    "auth_group_delete": frozenset({SUPERUSER}),
    "auth_group_change": frozenset({SUPERUSER, OPERATOR}),
    "auth_group_changelist": frozenset({SUPERUSER, OPERATOR}),
    "auth_group_history": frozenset({SUPERUSER, OPERATOR}),
    # Second factors: superusers only; their seeds and QR codes: nobody.
    **{
        f"otp_{app}_{model}_{view}": frozenset({SUPERUSER})
        for app, model in (("totp", "totpdevice"), ("static", "staticdevice"))
        for view in ("changelist", "add", "change", "delete", "history")
    },
    "otp_totp_totpdevice_config": frozenset(),
    "otp_totp_totpdevice_qrcode": frozenset(),
}


# Denied with 404 instead of 403: care-team users are scoped to their teams' patients
# (careteams.selectors.admin_patient_scope), and a history page outside the scope answers as for
# a missing object before any permission check.
DENIED_AS: dict[tuple[str, str], int] = {("accounts_user_history", CARE_TEAM): 404}


def _object_for(model: type[Any], cast: Cast) -> Any:
    """The object a walk URL of `model` is about: the sensitive one where there is one."""
    special: dict[type[Any], Any] = {
        User: cast.care_member,
        TOTPDevice: cast.totp,
        StaticDevice: cast.static,
        Group: Group.objects.get(name=roles.CARE_TEAM),
        Patient: cast.patient,
    }
    if model in special:
        return special[model]
    return model._default_manager.order_by("pk").first()


def walk_urls(cast: Cast) -> list[tuple[str, str]]:
    """(admin URL name or route, URL) for every admin URL the project has."""
    registry = admin.site._registry
    urls: list[tuple[str, str]] = []
    for route, pattern in _admin_patterns():
        assert isinstance(pattern, URLPattern)
        params = set(pattern.pattern.regex.groupindex)
        name = pattern.name or ""
        model_admin = getattr(pattern.callback, "model_admin", None)
        label = name or route
        if not params:
            urls.append((label, reverse(f"admin:{name}") if name else "/" + route))
        elif params == {"object_id"} and model_admin is not None:
            obj = _object_for(model_admin.model, cast)
            if obj is not None:
                urls.append((label, _url(route, name, object_id=obj.pk)))
        elif params == {"id"}:  # a user's password
            urls.append((label, _url(route, name, id=cast.care_member.pk)))
        elif params == {"pk"}:  # a TOTP device's key and QR code
            urls.append((label, _url(route, name, pk=cast.totp.pk)))
        elif params == {"app_label"}:
            for app_label in sorted({m._meta.app_label for m in registry}):
                urls.append((label, reverse(f"admin:{name}", kwargs={"app_label": app_label})))
        elif params == {"content_type_id", "object_id"}:
            ct = ContentType.objects.get_for_model(User)
            urls.append(
                (label, _url(route, name, content_type_id=ct.pk, object_id=cast.care_member.pk))
            )
        elif "patient_id" in params:  # the chart's pages (scoping: tests/.../test_careteams.py)
            kwargs: dict[str, Any] = {"patient_id": cast.patient.pk}
            kwargs.update({p: 0 for p in params - {"patient_id"}})
            urls.append((label, _url(route, name, **kwargs)))
        elif params == {"url"}:  # the catch-all
            urls.append((label, f"/admin/accounts/user/{cast.care_member.pk}/"))
        else:
            pytest.fail(f"the walk does not know how to call {route} ({params}); teach it")
    return urls


def test_walk_every_admin_url_as_each_role_denies_password_second_factor_and_privilege_pages(
    cast,
):
    """Every admin URL, as every staff role and a patient: the sensitive pages answer exactly
    200 to the roles allowed and 403 to every other staff role (the login page to a non-staff
    user), a denied POST is denied the same way, no page shows a seed, a backup code or a
    password hash, and nothing that decides sign-in or privileges changes.

    OWASP ASVS 5.0 8.2.1 (function-level access), 8.2.3 (field-level access); HIPAA
    164.312(a)(1), 164.312(d)."""
    urls = walk_urls(cast)
    names = {label for label, _ in urls}
    missing = set(SENSITIVE_GET) - names
    assert missing == set(), f"the walk no longer reaches {missing}"
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        assert "{}_{}_changelist".format(*info) in names
    secrets = secrets_of(cast)
    before = security_state()
    problems: list[str] = []
    for role in ALL_ROLES:
        client = as_role(cast, role)
        for label, url in urls:
            if label == "logout":
                continue
            response = client.get(url)
            status = response.status_code
            if status >= 500:
                problems.append(f"{role}: GET {url}: {status}")
                continue
            shown = [s for s in secrets if s in body_of(response)]
            if shown:
                problems.append(f"{role}: GET {url} shows a secret ({len(shown)})")
            if label not in SENSITIVE_GET:
                continue
            allowed = role in SENSITIVE_GET[label]
            if role == PATIENT:
                expected = 302
            else:
                expected = 200 if allowed else DENIED_AS.get((label, role), 403)
            if status != expected:
                problems.append(f"{role}: GET {url} ({label}): {status}, expected {expected}")
            if role == PATIENT and not response["Location"].startswith(LOGIN):
                problems.append(f"{role}: GET {url} redirects to {response['Location']}")
            if not allowed:
                posted = client.post(url, {"post": "yes", "is_superuser": "on", "key": SEED_HEX})
                if posted.status_code != expected:
                    problems.append(
                        f"{role}: POST {url} ({label}): {posted.status_code}, expected {expected}"
                    )
    assert problems == [], "\n".join(problems)
    assert security_state() == before


# --- Passwords -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", NON_SUPERUSERS)
@pytest.mark.parametrize(
    "target",
    ["care-team member", "patient", "another operator", "another auditor", "superuser"],
)
def test_password_takeover_of_another_user_through_the_admin_is_refused(cast, role, target):
    """An operator (or any staff role) sets a care-team member's or a patient's password in the
    admin, then signs in as them: refused with 403, the password unchanged.

    OWASP ASVS 5.0 8.2.1, 6.4.4 (factor changes need the owner); HIPAA 164.312(a)(1), (d)."""
    victim = cast.targets()[target]
    url = reverse("admin:auth_user_password_change", args=[victim.pk])
    client = as_role(cast, role)
    before = security_state()
    assert client.get(url).status_code == 403
    response = client.post(
        url,
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 403
    assert security_state() == before
    victim.refresh_from_db()
    assert (victim.check_password(PASSWORD), victim.check_password(NEW_PASSWORD)) == (True, False)


def test_user_change_form_has_no_set_password_link_for_an_operator(cast):
    """The change form's "set password" link is the way in to the password page: an operator's
    form has neither the link nor the hash widget. OWASP ASVS 5.0 8.2.3; HIPAA 164.312(a)(1)."""
    client = as_role(cast, OPERATOR)
    page = client.get(reverse("admin:accounts_user_change", args=[cast.care_member.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    password_url = reverse("admin:auth_user_password_change", args=[cast.care_member.pk])
    assert password_url not in html
    assert 'href="../password/"' not in html
    assert [name for name in _fieldset_names(page) if name == "password"] == []


def _fieldset_names(page: Any) -> list[str]:
    names: list[str] = []
    for _name, options in page.context["adminform"].fieldsets:
        names += list(options["fields"])
    return names


def test_superuser_sets_another_users_password_and_their_app_sessions_end(cast, mobile_app):
    """Positive control: a superuser still can (and the account's OAuth tokens are revoked,
    as after a password reset). ASVS 5.0 6.4.4; HIPAA 164.312(d)."""
    from oauth2_provider.models import RefreshToken

    from tests.patientportal.accounts_helpers import sign_in_with_pkce, verified_patient

    victim = verified_patient().user
    sign_in_with_pkce(victim)
    assert RefreshToken.objects.filter(user=victim, revoked__isnull=True).count() == 1
    client = as_role(cast, SUPERUSER)
    response = client.post(
        reverse("admin:auth_user_password_change", args=[victim.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302
    victim.refresh_from_db()
    assert victim.check_password(NEW_PASSWORD)
    assert RefreshToken.objects.filter(user=victim, revoked__isnull=True).count() == 0


@pytest.mark.parametrize("role", STAFF_ROLES)
def test_staff_change_their_own_password_only_through_the_flow_that_asks_for_it(cast, role):
    """Every staff role changes its own password at /admin/password_change/, which asks for the
    current one; without it nothing changes. Non-superusers' own "<id>/password/" (no current
    password asked) sends them there. OWASP ASVS 5.0 6.2.2, 6.2.3."""
    me = cast.actors[role]
    client = as_role(cast, role)
    own = client.get(reverse("admin:auth_user_password_change", args=[me.pk]))
    if role == SUPERUSER:
        assert own.status_code == 200
    else:
        assert (own.status_code, own["Location"]) == (302, reverse("admin:password_change"))
        posted = client.post(
            reverse("admin:auth_user_password_change", args=[me.pk]),
            {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
        )
        assert posted.status_code == 302
        me.refresh_from_db()
        assert me.check_password(PASSWORD)
    url = reverse("admin:password_change")
    wrong = client.post(
        url,
        {"old_password": "not-it", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert wrong.status_code == 200
    me.refresh_from_db()
    assert me.check_password(PASSWORD)
    right = client.post(
        url,
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert (right.status_code, right["Location"]) == (302, reverse("admin:password_change_done"))
    me.refresh_from_db()
    assert me.check_password(NEW_PASSWORD)


# --- Account takeover and privilege escalation through the user form -------------------------


def test_operator_cannot_take_an_account_over_by_changing_its_email(cast):
    """Pointing a care-team member's e-mail at the attacker, then asking for a password reset,
    is a password change by another route: the address is read-only for non-superusers.
    OWASP ASVS 5.0 8.2.3, 6.4.3; HIPAA 164.312(a)(1)."""
    victim = cast.care_member
    client = as_role(cast, OPERATOR)
    before = security_state()
    response = client.post(
        reverse("admin:accounts_user_change", args=[victim.pk]),
        {
            "email": "attacker@example.test",
            "first_name": victim.first_name,
            "last_name": victim.last_name,
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    assert security_state() == before


@pytest.mark.parametrize("whom", ["self", "care-team member", "patient"])
def test_operator_cannot_grant_superuser_staff_groups_or_permissions(cast, whom):
    """An operator posts privilege fields on its own or another user's change form: they are
    read-only (ignored), nothing changes. OWASP ASVS 5.0 8.2.3; HIPAA 164.312(a)(1)."""
    operator = cast.actors[OPERATOR]
    target = {
        "self": operator,
        "care-team member": cast.care_member,
        "patient": cast.patient.user,
    }[whom]
    client = as_role(cast, OPERATOR)
    every_group = [str(pk) for pk in Group.objects.values_list("pk", flat=True)]
    every_permission = [str(pk) for pk in Permission.objects.values_list("pk", flat=True)]
    before = security_state()
    response = client.post(
        reverse("admin:accounts_user_change", args=[target.pk]),
        {
            "email": target.email,
            "first_name": target.first_name,
            "last_name": target.last_name,
            "is_active": "on" if target.is_active else "",
            "is_staff": "on",
            "is_superuser": "on",
            "groups": every_group,
            "user_permissions": every_permission,
        },
    )
    assert response.status_code == 302
    assert security_state() == before


@pytest.mark.parametrize("role", NON_SUPERUSERS)
def test_adding_a_user_with_a_chosen_password_is_refused(cast, role):
    """The add-user form sets a password: superusers only. OWASP ASVS 5.0 8.2.1."""
    client = as_role(cast, role)
    url = reverse("admin:accounts_user_add")
    before = security_state()
    assert client.get(url).status_code == 403
    response = client.post(
        url,
        {"email": "new-admin@example.test", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 403
    assert security_state() == before


@pytest.mark.parametrize("role", NON_SUPERUSERS)
def test_bulk_delete_of_users_and_second_factors_is_refused(cast, role):
    """The changelists' bulk actions: deleting users or the victim's second factors (to enrol
    one's own afterwards) changes nothing. OWASP ASVS 5.0 8.2.1."""
    client = as_role(cast, role)
    before = security_state()
    for changelist, pks in (
        ("admin:accounts_user_changelist", [cast.care_member.pk, cast.patient.user.pk]),
        ("admin:otp_totp_totpdevice_changelist", [cast.totp.pk]),
        ("admin:otp_static_staticdevice_changelist", [cast.static.pk]),
    ):
        response = client.post(
            reverse(changelist),
            {
                "action": "delete_selected",
                "_selected_action": [str(pk) for pk in pks],
                "post": "yes",
            },
        )
        # Operators see the user list, which offers them no delete action (the list again).
        expected = (
            200 if (role, changelist) == (OPERATOR, "admin:accounts_user_changelist") else 403
        )
        assert response.status_code == expected, changelist
    assert security_state() == before


# --- Groups -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", NON_SUPERUSERS)
def test_editing_a_roles_group_to_grant_permissions_is_refused(cast, role):
    """An operator adds permissions (PHI, group editing) to its own role's group, adds a group
    or deletes one: 403, nothing changes. OWASP ASVS 5.0 8.2.1; HIPAA 164.312(a)(1)."""
    client = as_role(cast, role)
    group = Group.objects.get(name=roles.OPERATOR)
    grab = Permission.objects.filter(codename__in=["view_patient", "change_group", "add_user"])
    before = security_state()
    change = client.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {
            "name": group.name,
            "permissions": [str(pk) for pk in (*group.permissions.values_list("pk", flat=True),)]
            + [str(p.pk) for p in grab],
        },
    )
    add = client.post(
        reverse("admin:auth_group_add"),
        {"name": "Escalated", "permissions": [str(p.pk) for p in grab]},
    )
    delete = client.post(reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"})
    assert (change.status_code, add.status_code, delete.status_code) == (403, 403, 403)
    assert security_state() == before


def test_no_role_holds_a_permission_that_changes_identity_or_privilege(cast):
    """The role table and the groups the migrations made: no role can add or delete accounts,
    edit groups or permissions, or touch second factors; each group holds exactly its row of
    the table (plus nothing). OWASP ASVS 5.0 8.1.1, 8.2.1; HIPAA 164.312(a)(1)."""
    for role, names in roles.ROLE_PERMISSIONS.items():
        assert set(names) & roles.SUPERUSER_ONLY_PERMISSIONS == set(), role
        group = Group.objects.get(name=role)
        held = {
            f"{app}.{codename}"
            for app, codename in group.permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        assert held == {
            name
            for name in names
            if Permission.objects.filter(
                content_type__app_label=name.split(".")[0], codename=name.split(".")[1]
            ).exists()
        }, role
        assert held & roles.SUPERUSER_ONLY_PERMISSIONS == set(), role


def _form_data(form: Any) -> dict[str, Any]:
    """What a browser would post back for an unchanged admin form."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if value is None or field.disabled:
            continue
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        data[name] = value
    return data


def test_operator_cannot_let_an_app_skip_the_patients_approval(cast, mobile_app):
    """An operator edits the mobile app's registration to skip the approval page, so that any
    link a signed-in patient follows hands a code over without asking: the flag is read-only to
    non-superusers (the rest of the registration stays the operator's job).
    OWASP ASVS 5.0 8.2.3, 10.x (OAuth authorization server); HIPAA 164.312(a)(1)."""
    client = as_role(cast, OPERATOR)
    url = reverse("admin:oauth2_provider_application_change", args=[mobile_app.pk])
    page = client.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert "skip_authorization" not in form.fields
    data = _form_data(form)
    response = client.post(url, {**data, "name": "Renamed", "skip_authorization": "on"})
    assert response.status_code == 302
    mobile_app.refresh_from_db()
    assert (mobile_app.name, mobile_app.skip_authorization) == ("Renamed", False)
    # A superuser may (positive control).
    root = as_role(cast, SUPERUSER)
    superuser_form = root.get(url).context["adminform"].form
    assert "skip_authorization" in superuser_form.fields
    posted = root.post(url, {**_form_data(superuser_form), "skip_authorization": "on"})
    assert posted.status_code == 302
    mobile_app.refresh_from_db()
    assert mobile_app.skip_authorization is True


# --- Second factors -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", NON_SUPERUSERS)
def test_enrolling_a_second_factor_for_another_user_is_refused(cast, role):
    """The operator enrols its own authenticator (a seed it knows) or backup codes on a
    care-team member's account, so that with the password it signs in as them: 403, no device.
    OWASP ASVS 5.0 8.2.1, 6.4.4; HIPAA 164.312(d)."""
    client = as_role(cast, role)
    before = security_state()
    totp = client.post(
        reverse("admin:otp_totp_totpdevice_add"),
        {
            "user": cast.care_member.pk,
            "name": "attacker",
            "confirmed": "on",
            "key": "00" * 20,
            "step": 30,
            "t0": 0,
            "digits": 6,
            "tolerance": 1,
            "drift": 0,
            "throttling_failure_count": 0,
        },
    )
    static = client.post(
        reverse("admin:otp_static_staticdevice_add"),
        {
            "user": cast.care_member.pk,
            "name": "attacker",
            "confirmed": "on",
            "token_set-TOTAL_FORMS": "1",
            "token_set-INITIAL_FORMS": "0",
            "token_set-0-token": "attackercode",
        },
    )
    assert (totp.status_code, static.status_code) == (403, 403)
    assert security_state() == before


@pytest.mark.parametrize("role", NON_SUPERUSERS)
def test_replacing_or_removing_another_users_second_factor_is_refused(cast, role):
    """Changing the victim's device (re-keying it) or deleting it (to enrol a new one): 403.
    OWASP ASVS 5.0 8.2.1, 6.4.4; HIPAA 164.312(d)."""
    client = as_role(cast, role)
    before = security_state()
    answers = [
        client.post(
            reverse("admin:otp_totp_totpdevice_change", args=[cast.totp.pk]),
            {"user": cast.care_member.pk, "name": "phone", "confirmed": "", "key": "00" * 20},
        ).status_code,
        client.post(
            reverse("admin:otp_totp_totpdevice_delete", args=[cast.totp.pk]), {"post": "yes"}
        ).status_code,
        client.post(
            reverse("admin:otp_static_staticdevice_change", args=[cast.static.pk]),
            {"user": cast.care_member.pk, "name": "backup", "confirmed": ""},
        ).status_code,
        client.post(
            reverse("admin:otp_static_staticdevice_delete", args=[cast.static.pk]),
            {"post": "yes"},
        ).status_code,
    ]
    assert answers == [403, 403, 403, 403]
    assert security_state() == before


@pytest.mark.parametrize("role", STAFF_ROLES)
def test_totp_seed_key_and_qr_views_are_refused_to_everyone_including_superusers(cast, role):
    """django-otp's key ("config") and QR views would show the seed: 403 for every role.
    OWASP ASVS 5.0 6.5.x (authenticator secrets), 8.2.1; HIPAA 164.312(d)."""
    client = as_role(cast, role)
    for name in ("admin:otp_totp_totpdevice_config", "admin:otp_totp_totpdevice_qrcode"):
        response = client.get(reverse(name, args=[cast.totp.pk]))
        assert response.status_code == 403, name
        assert SEED_HEX not in body_of(response)


def test_superuser_pages_of_second_factors_show_no_seed_or_backup_code(cast):
    """Even a superuser's list, change and history pages of the devices show no seed (hex or
    base32), no QR link and no backup code. OWASP ASVS 5.0 6.5.x; HIPAA 164.312(d)."""
    client = as_role(cast, SUPERUSER)
    secrets = secrets_of(cast)
    for url in (
        reverse("admin:otp_totp_totpdevice_changelist"),
        reverse("admin:otp_totp_totpdevice_change", args=[cast.totp.pk]),
        reverse("admin:otp_totp_totpdevice_history", args=[cast.totp.pk]),
        reverse("admin:otp_static_staticdevice_changelist"),
        reverse("admin:otp_static_staticdevice_change", args=[cast.static.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        html = body_of(response)
        assert [s for s in secrets if s in html] == [], url
        assert "qrcode" not in html.lower(), url
        assert "config/" not in html, url


def test_superuser_registers_a_hardware_token_through_a_write_only_key_field(cast):
    """The add page pre-fills no generated seed (nor a hidden initial copy of one); a typed seed
    is stored and not echoed on a form error. OWASP ASVS 5.0 6.5.x; HIPAA 164.312(d)."""
    client = as_role(cast, SUPERUSER)
    url = reverse("admin:otp_totp_totpdevice_add")
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    key_inputs = re.findall(r"<input[^>]*name=\"(?:initial-)?key\"[^>]*>", html)
    assert len(key_inputs) == 1
    assert 'type="password"' in key_inputs[0]
    assert "value=" not in key_inputs[0]
    typed = "ab" * 20
    form = {
        "user": cast.care_member.pk,
        "name": "hardware token",
        "confirmed": "on",
        "key": typed,
        "step": 30,
        "t0": 0,
        "digits": 6,
        "tolerance": 1,
        "drift": 0,
        "throttling_failure_count": 0,
    }
    invalid = client.post(url, {**form, "step": "not a number"})
    assert invalid.status_code == 200
    assert typed not in invalid.content.decode()
    saved = client.post(url, form)
    assert saved.status_code == 302
    device = TOTPDevice.objects.get(name="hardware token")
    assert (device.user_id, device.key, device.confirmed) == (cast.care_member.pk, typed, True)
    change = client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk]))
    assert typed not in change.content.decode()


PROBES: dict[str, Callable[[Cast], str]] = {
    "user password": lambda c: reverse("admin:auth_user_password_change", args=[c.care_member.pk]),
    "totp list": lambda c: reverse("admin:otp_totp_totpdevice_changelist"),
    "static list": lambda c: reverse("admin:otp_static_staticdevice_changelist"),
}


def test_the_admin_index_offers_no_second_factor_or_group_editing_to_an_operator(cast):
    """What the operator's admin index lists: no second-factor models; groups read-only.
    OWASP ASVS 5.0 8.2.1."""
    client = as_role(cast, OPERATOR)
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    models = {
        (app["app_label"], model["object_name"]): model
        for app in index.context["app_list"]
        for model in app["models"]
    }
    assert ("otp_totp", "TOTPDevice") not in models
    assert ("otp_static", "StaticDevice") not in models
    group = models[("auth", "Group")]
    assert (group["perms"]["add"], group["perms"]["change"], group["perms"]["delete"]) == (
        False,
        False,
        False,
    )
    for name, probe in PROBES.items():
        assert client.get(probe(cast)).status_code == 403, name


def test_a_plain_staff_user_given_second_factor_permissions_still_cannot_use_them(cast):
    """Permissions granted by mistake open nothing: the admin checks superuser status itself.
    OWASP ASVS 5.0 8.2.1 (enforced at the trusted layer); HIPAA 164.312(a)(1)."""
    staff = UserFactory.create(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label__in=["otp_totp", "otp_static", "auth"],
        ),
        *Permission.objects.filter(codename__in=["add_user", "change_user", "delete_user"]),
    )
    client = client_for(User.objects.get(pk=staff.pk))
    before = security_state()
    for name, probe in PROBES.items():
        assert client.get(probe(cast)).status_code == 403, name
    group = Group.objects.get(name=roles.CARE_TEAM)
    response = client.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": group.name, "permissions": [str(p.pk) for p in Permission.objects.all()]},
    )
    assert response.status_code == 403
    assert client.get(reverse("admin:accounts_user_add")).status_code == 403
    assert security_state() == before

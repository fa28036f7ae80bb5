"""The accounts admin: no token or hash shown, no privilege escalation by operators."""

from __future__ import annotations

import pytest
from django.test import Client

from patientportal.accounts import roles
from patientportal.accounts.models import AccountDeletionRequest, User
from patientportal.accounts.services import account_deletion_request
from tests.factories import PatientFactory, StaffFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(StaffFactory.create(role=roles.OPERATOR))
    return client


def test_user_change_page_shows_no_password_hash(operator):
    user = PatientFactory.create().user
    response = operator.get(f"/admin/accounts/user/{user.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    hash_part = user.password.split("$")[-1]
    assert hash_part not in html
    assert user.password not in html


def test_operator_cannot_grant_privileges(operator):
    user = PatientFactory.create().user
    page = operator.get(f"/admin/accounts/user/{user.pk}/change/")
    form = page.context["adminform"].form
    assert "is_superuser" not in form.fields
    assert "is_staff" not in form.fields
    assert "groups" not in form.fields
    operator.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
        },
    )
    user.refresh_from_db()
    assert (user.is_staff, user.is_superuser) == (False, False)


def test_operator_cannot_change_a_superuser(operator):
    admin_user = User.objects.create_superuser("root@example.test", "root-password-123")
    response = operator.get(f"/admin/accounts/user/{admin_user.pk}/password/")
    assert response.status_code == 403
    response = operator.post(
        f"/admin/accounts/user/{admin_user.pk}/change/",
        {"email": "mine@example.test", "is_active": "on"},
    )
    assert response.status_code == 403
    admin_user.refresh_from_db()
    assert admin_user.email == "root@example.test"


def test_superuser_sees_deletion_requests_read_only():
    patient = PatientFactory.create()
    request = account_deletion_request(user=patient.user)
    client = Client()
    client.force_login(User.objects.create_superuser("root@example.test", "root-password-123"))
    page = client.get(f"/admin/accounts/accountdeletionrequest/{request.pk}/change/")
    assert page.status_code == 200
    assert client.get("/admin/accounts/accountdeletionrequest/add/").status_code == 403
    delete = client.post(
        f"/admin/accounts/accountdeletionrequest/{request.pk}/delete/", {"post": "yes"}
    )
    assert delete.status_code == 403
    assert AccountDeletionRequest.objects.count() == 1


def test_deactivating_a_user_in_the_admin_signs_their_apps_out(operator, mobile_app):
    from oauth2_provider.models import AccessToken, RefreshToken

    from tests.patientportal.accounts_helpers import sign_in_with_pkce, verified_patient

    user = verified_patient().user
    sign_in_with_pkce(user)
    response = operator.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {"email": user.email, "first_name": user.first_name, "last_name": user.last_name},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.is_active is False
    assert AccessToken.objects.filter(user=user).count() == 0
    assert RefreshToken.objects.filter(user=user, revoked__isnull=True).count() == 0


@pytest.mark.parametrize("role", [roles.OPERATOR, roles.AUDITOR])
def test_operators_and_auditors_can_view_deletion_requests_only(role):
    patient = PatientFactory.create()
    request = account_deletion_request(user=patient.user)
    staff = StaffFactory.create(role=role)
    assert staff.has_perm("accounts.view_accountdeletionrequest")
    assert not staff.has_perm("accounts.change_accountdeletionrequest")
    assert not staff.has_perm("accounts.delete_accountdeletionrequest")
    client = Client()
    client.force_login(staff)
    page = client.get(f"/admin/accounts/accountdeletionrequest/{request.pk}/change/")
    assert page.status_code == 200

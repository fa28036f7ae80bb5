"""Operator commands (the main app's demo seeding calls these by name)."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from fhirlink.sandbox.conf import DEMO_TENANT
from fhirlink.sandbox.models import SandboxClient


@pytest.mark.django_db
def test_client_register_is_idempotent():
    for _ in range(2):
        call_command(
            "sandbox_client_register",
            "--client-id",
            "portal",
            "--redirect-uri",
            "http://127.0.0.1:8000/cb",
            "--access",
            "offline",
        )

    client = SandboxClient.objects.get()
    assert (
        client.tenant,
        client.client_id,
        client.redirect_uris,
        client.confidential,
        client.smart_version,
        client.access,
    ) == (
        DEMO_TENANT,
        "portal",
        ["http://127.0.0.1:8000/cb"],
        False,
        "v2",
        "offline",
    )


@pytest.mark.django_db
def test_client_register_confidential_with_secret_or_jwks(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": []}))

    call_command(
        "sandbox_client_register",
        "--client-id",
        "s",
        "--redirect-uri",
        "https://a/cb",
        "--secret",
        "x",
        "--smart",
        "v1",
    )
    call_command(
        "sandbox_client_register",
        "--client-id",
        "j",
        "--redirect-uri",
        "https://a/cb",
        "--jwks-file",
        str(jwks),
        "--tenant",
        "t-2",
    )

    secret_client = SandboxClient.objects.get(client_id="s")
    assert secret_client.confidential is True
    assert secret_client.secret_hash != "x"
    assert secret_client.smart_version == "v1"
    assert SandboxClient.objects.get(client_id="j").tenant == "t-2"


@pytest.mark.django_db
def test_client_register_refuses_a_confidential_client_without_credentials():
    with pytest.raises(CommandError):
        call_command(
            "sandbox_client_register",
            "--client-id",
            "c",
            "--redirect-uri",
            "https://a/cb",
            "--confidential",
        )
    assert SandboxClient.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_benchmark_prints_a_table(capsys):
    call_command("sandbox_benchmark", "--pages", "3")

    out = capsys.readouterr().out
    rows = {
        k.strip(): v.strip() for k, v in (line.rsplit("  ", 1) for line in out.splitlines()[2:])
    }
    assert rows["pages fetched"] == "3"
    assert rows["entries per page"] == "201"  # 3 pages of 200, plus 3 social-history rows on page 1
    assert float(rows["pages/s (client+server, one process)"]) > 0


def test_patients_command_lists_logins(capsys):
    call_command("sandbox_patients", "--json")

    rows = json.loads(capsys.readouterr().out)
    assert [r["username"] for r in rows] == [
        "nancysandbox",
        "joesandbox",
        "timsandbox",
        "hugosandbox",
        "parentsandbox",
        "",  # the child: no login of her own, managed by parentsandbox
    ]
    assert [r["large"] for r in rows] == [False, False, False, True, False, False]
    assert rows[3]["observations"] == 50_400
    assert [r["manages"] for r in rows] == [[], [], [], [], ["12800106"], []]


@pytest.mark.django_db
def test_tenant_command_sets_switches(capsys):
    call_command("sandbox_tenant", "--tenant", "t-9", "--switch", "pkce_required_for_public=false")

    out = json.loads(capsys.readouterr().out)
    assert out["tenant"] == "t-9"
    assert out["switches"]["pkce_required_for_public"] is False
    with pytest.raises(CommandError):
        call_command("sandbox_tenant", "--switch", "nope=1")

"""The OpenAPI schema is complete and valid, and the docs page is served."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import call_command
from django.test import Client


@pytest.mark.django_db
def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    stderr = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=stderr)
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["schemas"]["Error"]["required"] == ["code", "message", "status"]
    assert "oauth2" in schema["components"]["securitySchemes"]
    flows = schema["components"]["securitySchemes"]["oauth2"]["flows"]
    assert set(flows) == {"authorizationCode"}


@pytest.mark.django_db
def test_every_api_operation_documents_the_error_responses(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in {"parameters", "summary", "description"}:
                continue
            assert {"401", "403", "404", "429"} <= set(operation["responses"]), (path, method)
            assert operation.get("security"), (path, method)


@pytest.mark.django_db
def test_schema_and_docs_are_served():
    client = Client()
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi" in response.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()

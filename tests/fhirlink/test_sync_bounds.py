"""Sync bounds (issue 5) against the sandbox: a page over `FHIRLINK_SYNC_MAX_PAGE_BYTES`, a
stream over `FHIRLINK_SYNC_MAX_PAGES`, a Binary over `FHIRLINK_SYNC_MAX_BINARY_BYTES`.

Each refuses only what it bounds, with a stable code on the run (`page_too_large`,
`too_many_pages`, `binary_too_large`); the run ends `partial`, the other types complete, and
nothing else is lost: no tombstone, no duplicate, no PHI or URL in the errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse

from fhirlink.models import Connection, SyncedResource, SyncRun, SyncWatermark
from fhirlink.models.sync import StreamStatus
from fhirlink.sandbox import views_fhir
from fhirlink.sandbox.fhir import data as sandbox_data
from fhirlink.services.sync.store import resource_payload
from fhirlink.services.tokens import connection_access_token
from fhirlink.sync.inline import sync_connection_run
from tests.fhirlink.test_sync_worker import assert_no_duplicates
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [pytest.mark.integration]

Key = tuple[str, str, bool]  # (resource type, id, is_reference)


def all_rows(connection: Connection) -> dict[Key, dict[str, Any]]:
    """Every stored row of the connection (references and Binary included), live or not."""
    return {
        (row.resource_type, row.fhir_id, row.is_reference): resource_payload(row)
        for row in SyncedResource.objects.filter(connection=connection)
    }


def latest_run(connection: Connection) -> SyncRun:
    run = SyncRun.objects.filter(connection=connection).order_by("-created_at").first()
    assert run is not None
    return run


def full_marks(connection: Connection) -> dict[str, Any]:
    return dict(
        SyncWatermark.objects.filter(connection=connection).values_list(
            "resource_type", "last_full_at"
        )
    )


def assert_nothing_lost(connection: Connection, before: dict[Key, dict[str, Any]]) -> None:
    """The store is exactly what it was: every row still there, live, once, unchanged."""
    assert all_rows(connection) == before
    assert not SyncedResource.objects.filter(
        connection=connection, deleted_at__isnull=False
    ).exists()
    assert_no_duplicates(connection)


def assert_other_types_complete(run: SyncRun, baseline: SyncRun, *, bounded: str) -> None:
    """Every stream of another type is done and fetched what the unbounded run fetched."""
    others = run.streams.exclude(resource_type=bounded)
    assert {s.status for s in others} == {StreamStatus.DONE}
    assert {s.resource_type for s in others} == set(baseline.counts) - {bounded}
    for rtype, counts in run.counts.items():
        assert counts["tombstoned"] == 0, rtype
        if rtype != bounded:
            assert counts["fetched"] == baseline.counts[rtype]["fetched"], rtype
            assert counts["created"] + counts["updated"] == 0, rtype


def assert_reconciled_all_but(connection: Connection, before: dict[str, Any], bounded: str) -> None:
    """Every other searched type completed a new full pass; the bounded one did not."""
    after = full_marks(connection)
    assert after[bounded] == before[bounded] is not None
    searched = {t for t, at in before.items() if at is not None}
    assert len(searched) == 13
    assert {t for t in searched if after[t] > before[t]} == searched - {bounded}


def synced_baseline(
    sandbox_connect: Callable[..., Connection],
) -> tuple[Connection, SyncRun, dict[Key, dict[str, Any]], dict[str, Any]]:
    """An unbounded first sync of nancy: the connection, its run, its rows, its full marks."""
    connection = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    return connection, latest_run(connection), all_rows(connection), full_marks(connection)


def full_pass_again(settings: Any) -> None:
    """The next run is a full pass of every type: the one that reconciles (tombstones)."""
    settings.FHIRLINK_SYNC_RECONCILE_DAYS = 0


def test_page_too_large_fails_only_that_stream(
    sandbox: SandboxHandle, sandbox_connect: Callable[..., Connection], settings: Any
) -> None:
    connection, baseline, before, marks = synced_baseline(sandbox_connect)
    # The bound sits between Observation's one page and every other stream's whole size.
    observation = baseline.streams.get(key="Observation")
    assert observation.pages == 1
    limit = max(s.bytes for s in baseline.streams.exclude(resource_type="Observation"))
    assert limit < observation.bytes

    settings.FHIRLINK_SYNC_MAX_PAGE_BYTES = limit
    full_pass_again(settings)
    assert sync_connection_run(connection_id=connection.pk) == "partial"

    run = latest_run(connection)
    assert run.errors == [{"type": "Observation", "code": "page_too_large"}]
    failed = run.streams.get(resource_type="Observation")
    assert (failed.status, failed.error, failed.pages, failed.fetched) == (
        StreamStatus.FAILED,
        "page_too_large",
        0,
        0,
    )
    assert run.counts["Observation"]["fetched"] == 0
    assert_other_types_complete(run, baseline, bounded="Observation")
    # The failed type was not reconciled: its rows (all unseen by this run) are all still live.
    assert_nothing_lost(connection, before)
    assert_reconciled_all_but(connection, marks, "Observation")


def test_too_many_pages_fails_only_that_stream(
    sandbox: SandboxHandle, sandbox_connect: Callable[..., Connection], settings: Any
) -> None:
    connection, baseline, before, marks = synced_baseline(sandbox_connect)
    observations = baseline.counts["Observation"]["fetched"]
    assert observations > 10 * 2 * 2  # more than two windows of two pages of ten

    settings.FHIRLINK_SYNC_PAGE_SIZE = 10
    settings.FHIRLINK_SYNC_MAX_PAGES = 2
    full_pass_again(settings)
    assert sync_connection_run(connection_id=connection.pk) == "partial"

    run = latest_run(connection)
    failed = list(run.streams.filter(status=StreamStatus.FAILED).order_by("id"))
    assert failed
    for stream in failed:
        # Stopped at the bound with more to fetch; the two pages it had are stored.
        assert (stream.resource_type, stream.error, stream.pages) == (
            "Observation",
            "too_many_pages",
            2,
        )
        assert stream.next_url
        assert stream.fetched >= 2 * 10
    assert run.errors == [{"type": "Observation", "code": "too_many_pages"}] * len(failed)
    windows = run.streams.filter(resource_type="Observation").exclude(key="Observation")
    assert all(s.pages <= 2 for s in windows)
    fetched = sum(s.fetched for s in run.streams.filter(resource_type="Observation"))
    assert run.counts["Observation"]["fetched"] == fetched
    assert 0 < fetched < observations
    assert run.counts["Observation"]["unchanged"] == fetched
    assert_other_types_complete(run, baseline, bounded="Observation")
    assert_nothing_lost(connection, before)
    assert_reconciled_all_but(connection, marks, "Observation")


def binary_ids(connection: Connection) -> dict[str, int]:
    """Stored Binary id -> its decoded size."""
    return {
        row.fhir_id: len(base64.b64decode(resource_payload(row)["data"]))
        for row in SyncedResource.objects.filter(connection=connection, resource_type="Binary")
    }


def attachments(connection: Connection) -> dict[str, str]:
    """Binary id -> the id of the stored DocumentReference whose attachment names it."""
    out: dict[str, str] = {}
    for row in SyncedResource.objects.filter(
        connection=connection, resource_type="DocumentReference", deleted_at__isnull=True
    ):
        for content in resource_payload(row)["content"]:
            out[content["attachment"]["url"].rpartition("/Binary/")[2]] = row.fhir_id
    return out


def assert_no_phi(sandbox: SandboxHandle, connection: Connection, run: SyncRun) -> None:
    text = json.dumps(run.errors).lower()
    nancy = sandbox.patients["nancy"]
    forbidden = [
        nancy.given,
        nancy.family,
        nancy.fhir_id,
        nancy.birth_date,
        sandbox.origin,
        sandbox.tenant,
        "http",
        "note",  # attachment titles and content
        "summary",
        connection_access_token(connection_id=connection.pk),
    ]
    assert [w for w in forbidden if w.lower() in text] == []


def test_binary_too_large_is_refused_with_an_error_and_the_documents_kept(
    sandbox: SandboxHandle, sandbox_connect: Callable[..., Connection], settings: Any
) -> None:
    settings.FHIRLINK_SYNC_MAX_BINARY_BYTES = 10
    connection = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=connection.pk) == "partial"

    run = latest_run(connection)
    documents = attachments(connection)
    assert len(documents) == run.counts["DocumentReference"]["fetched"] == 8
    assert binary_ids(connection) == {}
    expected = [
        {
            "type": "Binary",
            "code": "binary_too_large",
            "id": binary,
            "document": f"DocumentReference/{document}",
        }
        for binary, document in sorted(documents.items())
    ]
    assert sorted(run.errors, key=lambda e: str(e.get("id"))) == expected
    assert {s.status for s in run.streams.all()} == {StreamStatus.DONE}
    assert_no_phi(sandbox, connection, run)

    # Nothing was lost for good: without the bound the next run fetches every attachment.
    settings.FHIRLINK_SYNC_MAX_BINARY_BYTES = 10 * 1024 * 1024
    assert sync_connection_run(connection_id=connection.pk) == "succeeded"
    assert latest_run(connection).errors == []
    assert set(binary_ids(connection)) == set(documents)


def test_binary_bound_is_exact(
    sandbox: SandboxHandle, sandbox_connect: Callable[..., Connection], settings: Any
) -> None:
    """A Binary of exactly the bound is stored (base64 padding does not count), one byte more is
    refused."""
    unbounded = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=unbounded.pk) == "succeeded"
    sizes = binary_ids(unbounded)
    largest = max(sizes.values())
    assert len(sizes) == 8
    assert 0 < sum(1 for s in sizes.values() if s == largest) < len(sizes)

    settings.FHIRLINK_SYNC_MAX_BINARY_BYTES = largest
    at_limit = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=at_limit.pk) == "succeeded"
    assert binary_ids(at_limit) == sizes

    settings.FHIRLINK_SYNC_MAX_BINARY_BYTES = largest - 1
    over = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=over.pk) == "partial"
    assert binary_ids(over) == {b: s for b, s in sizes.items() if s < largest}
    refused = sorted(b for b, s in sizes.items() if s == largest)
    assert sorted(e["id"] for e in latest_run(over).errors) == refused
    assert {e["code"] for e in latest_run(over).errors} == {"binary_too_large"}


def test_binary_declared_or_downloaded_over_the_bound(
    sandbox: SandboxHandle,
    sandbox_connect: Callable[..., Connection],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A declared size over the bound is refused before any request; a size declared under it
    (or none) is checked on what was downloaded, small enough for the client's bound on the body
    or not. Either way: not stored, the same code, the run goes on."""
    declared = {"XR-10000000": 5000, "XR-10000002": 5000}  # over: never asked for
    lying = {"TR-10000001": 1200, "TR-10000003": 1200, "TR-10000005": 8000, "TR-10000007": 8000}
    fine = {"XR-10000006", "XR-10000008"}  # no declared size, 616 bytes: stored

    render = sandbox_data.RENDERERS["DocumentReference"]

    def with_sizes(*args: Any) -> dict[str, Any]:
        resource: dict[str, Any] = render(*args)
        attachment = resource["content"][0]["attachment"]
        binary = attachment["url"].rpartition("/Binary/")[2]
        if binary in declared:
            attachment["size"] = declared[binary]
        elif binary in lying:
            attachment["size"] = 100
        return resource

    content = sandbox_data.binary_content

    def larger(patient: Any, source: str, row: Any, binary_id: str) -> tuple[str, bytes]:
        content_type, body = content(patient, source, row, binary_id)
        if binary_id in lying:
            return content_type, (body * lying[binary_id])[: lying[binary_id]]
        return content_type, body

    asked: list[str] = []
    serve = views_fhir._binary

    def counting(request: HttpRequest, ctx: Any, token: Any, rid: str) -> HttpResponse:
        asked.append(rid)
        return serve(request, ctx, token, rid)

    monkeypatch.setitem(sandbox_data.RENDERERS, "DocumentReference", with_sizes)
    monkeypatch.setattr(sandbox_data, "binary_content", larger)
    monkeypatch.setattr(views_fhir, "_binary", counting)
    settings.FHIRLINK_SYNC_MAX_BINARY_BYTES = 1000

    connection = sandbox_connect("nancy")
    assert sync_connection_run(connection_id=connection.pk) == "partial"

    run = latest_run(connection)
    assert sorted(asked) == sorted([*lying, *fine])
    assert set(binary_ids(connection)) == fine
    documents = attachments(connection)
    assert set(documents) == {*declared, *lying, *fine}
    expected = [
        {
            "type": "Binary",
            "code": "binary_too_large",
            "id": binary,
            "document": f"DocumentReference/{documents[binary]}",
            **({"size": declared[binary]} if binary in declared else {}),
        }
        for binary in sorted([*declared, *lying])
    ]
    assert sorted(run.errors, key=lambda e: str(e.get("id"))) == expected
    assert {s.status for s in run.streams.all()} == {StreamStatus.DONE}
    assert run.counts["DocumentReference"]["fetched"] == 8
    assert_no_phi(sandbox, connection, run)

"""Referenced resources (Practitioner, Organization, Location, Medication; fetched once per
connection, beside the streams as soon as a stored page names them; those a resumed run's
earlier pages named, and those the previous run failed to fetch, at the latest once the
streams are stored) and
DocumentReference attachments (Binary, within the size and content-type limits; fetched while
the other streams run, once the DocumentReferences are stored, or after the streams on a
resumed run), fetched concurrently and stored like a page (the engine's
`_EarlyExtras` feeds the fetches made beside the streams).

A Binary over `FHIRLINK_SYNC_MAX_BINARY_BYTES` (by its attachment's declared `size`, before any
request, or by what was actually downloaded) is never stored: the run records a
`binary_too_large` error naming the Binary and its DocumentReference by id (never a URL or
content), so the run ends `partial` like any other item that could not be fetched; the
DocumentReference itself is kept."""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections

from fhirlink import http, vault
from fhirlink.exceptions import ConnectionGone, ConnectionNotFound, ReauthRequired
from fhirlink.fhir_client import (
    Cancelled,
    FhirClient,
    FhirPageError,
    LimitExceeded,
)
from fhirlink.models import (
    Connection,
    SyncedResource,
    SyncRun,
)
from fhirlink.scopes import requested_resources
from fhirlink.services.sync import plan
from fhirlink.services.sync.runs import RUN_ENDING_CODES, StopRun
from fhirlink.services.sync.store import (
    resource_payload,
    resource_upsert_page,
)

logger = logging.getLogger(__name__)

S = plan.setting

# A FHIR id (R4 `id`): what an error may name. Anything else taken from a URL is left out.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
BINARY_TOO_LARGE = "binary_too_large"
Job = tuple[str, str, str]  # ("ref", type, id) or ("binary", "Binary", URL)
# Fetched extras stored per transaction (as a page is); Binaries also by their encoded bytes.
EXTRAS_BATCH = 50
# References a previous run failed to fetch, asked for again per run (see
# `_references_unresolved`): enough for a server's passing trouble, and a bound on what a
# server that lost some of them costs every incremental sync.
REFERENCE_RETRIES_PER_RUN = 100


class ExtrasMixin:
    run: SyncRun
    connection: Connection
    client: FhirClient
    base: str
    stop: threading.Event

    if TYPE_CHECKING:

        def _check_still_ours(self) -> None: ...

        def _add_error(self, resource_type: str, code: str, **extra: Any) -> None: ...

    def _reference_types(self) -> set[str]:
        """The referenced types to fetch: those of `REFERENCE_TYPES` the server supports and
        the patient granted (a server that enforces scopes answers 403 to the others)."""
        return {t for t in self._reference_types_supported() if self._reference_granted(t)}

    def _reference_types_supported(self) -> set[str]:
        supported = (self.connection.health_system.discovery or {}).get("resources")
        return set(plan.REFERENCE_TYPES) & set(supported or plan.REFERENCE_TYPES)

    def _reference_granted(self, rtype: str) -> bool:
        if rtype in (self.connection.granted_resources or []):
            return True
        # A connection launched before the references' scopes were requested (issue #20):
        # never asked for, so read as before (a server that allows it still answers).
        return rtype not in requested_resources(self.connection.requested_scopes or "")

    def _references_not_granted(self, references: list[str]) -> list[dict[str, Any]]:
        """What the run skipped because the patient did not grant its type: one entry per
        type, with how many references the stored pages named (no ids: nothing was read)."""
        skipped = self._reference_types_supported() - self._reference_types()
        counts: dict[str, int] = {}
        for ref in references:
            rtype = ref.partition("/")[0]
            if rtype in skipped:
                counts[rtype] = counts.get(rtype, 0) + 1
        return [
            {"type": rtype, "reason": "not_granted", "references": n}
            for rtype, n in sorted(counts.items())
        ]

    def _references_stored(self) -> set[tuple[str, str]]:
        """The connection's referenced resources already stored (fetched once per connection).
        By type, so that the store's (connection, type, id) index finds them: by the flag alone
        it read every row of the connection (40 ms for the large patient, three times a run)."""
        return set(
            SyncedResource.objects.filter(
                connection=self.connection,
                resource_type__in=plan.REFERENCE_TYPES,
                is_reference=True,
            ).values_list("resource_type", "fhir_id")
        )

    def _references_unresolved(self) -> list[str]:
        """References ("Type/id") the connection's previous planned run named but did not
        store (their fetch failed): this run asks for them again, beside its streams, at most
        `REFERENCE_RETRIES_PER_RUN`, instead of only when a full pass reads a page naming
        them again. A failure carries them on to the next run in turn."""
        previous = (
            SyncRun.objects.filter(connection=self.connection)
            .exclude(pk=self.run.pk)
            .exclude(resource_types=[])  # planned (a run that died before has no references)
            .order_by("-created_at")
            .values_list("references", flat=True)
            .first()
        )
        if not previous:
            return []
        have = self._references_stored()
        types = self._reference_types()
        unresolved = []
        for ref in previous:
            rtype, _, fhir_id = ref.partition("/")
            if (rtype, fhir_id) not in have and rtype in types:
                unresolved.append(ref)
        return unresolved[:REFERENCE_RETRIES_PER_RUN]

    def _fetch_extras(self, *, binaries: bool = True) -> None:
        """After the streams: the Binaries, when they were not fetched beside them
        (`binaries`: a resumed run whose DocumentReferences were stored before). Every
        reference the run knows of was handed to the fetches beside the streams."""
        documents = self._binary_jobs() if binaries else {}
        jobs: list[Job] = [("binary", "Binary", url) for url in sorted(documents)]
        if not jobs:
            return
        concurrency = max(1, int(S("FHIRLINK_SYNC_CONCURRENCY", 4)))
        batches: dict[str, list[dict[str, Any]]] = {"binary": []}
        with ThreadPoolExecutor(
            max_workers=plan.fetch_threads(concurrency), thread_name_prefix="fhir-extra"
        ) as pool:
            for job, data, error in pool.map(self._fetch_extra, jobs):
                self._extra_fetched(job, data, error, documents, batches)
            self._store_extras(batches)

    def _binary_jobs(self) -> dict[str, str]:
        """The Binaries to download (URL -> the DocumentReference naming it), once the
        DocumentReferences are stored; none when Binary was not granted."""
        if "DocumentReference" in self.run.resource_types and "Binary" in (
            self.connection.granted_resources or []
        ):
            return self._binary_urls()
        return {}

    def _fetch_extra(self, job: Job) -> tuple[Job, dict[str, Any] | None, str]:
        """On a fetch thread: a referenced resource or a Binary, or the error code."""
        retries = int(S("FHIRLINK_SYNC_PAGE_RETRIES", 2))
        try:
            if job[0] == "ref":
                return job, self.client.read_retrying(job[1], job[2], retries=retries), ""
            return job, self.client.binary_retrying(job[2], retries=retries), ""
        except (http.EhrHttpError, FhirPageError, LimitExceeded, Cancelled) as exc:
            code = getattr(exc, "code", "") or (
                f"http_{exc.status}" if isinstance(exc, http.EhrHttpError) else "error"
            )
            return job, None, str(code)
        except (ReauthRequired, ConnectionGone, ConnectionNotFound) as exc:
            return job, None, exc.code
        finally:
            close_old_connections()

    def _extra_fetched(
        self,
        job: Job,
        data: dict[str, Any] | None,
        error: str,
        documents: dict[str, str],
        batches: dict[str, list[dict[str, Any]]],
    ) -> None:
        """On the writer: record a failed extra, or batch a fetched one for storing."""
        if error:
            if error in RUN_ENDING_CODES:
                self.stop.set()  # the remaining jobs stop before their next request
                raise StopRun(error)
            if job[0] == "binary":
                self._add_error("Binary", error, **_binary_names(job[2], documents[job[2]]))
            else:
                # The reference's id (a FHIR id only) says which one to look for.
                named = {"id": job[2]} if FHIR_ID.fullmatch(job[2]) else {}
                self._add_error(job[1], error, **named)
            return
        assert data is not None
        max_binary = int(S("FHIRLINK_SYNC_MAX_BINARY_BYTES", 10 * 1024 * 1024))
        if job[0] == "binary":
            size = _base64_size(str(data.get("data", "")))
            if size > max_binary:
                # The server sent more than the bound (no declared size, or a wrong one).
                self._add_error(
                    "Binary", BINARY_TOO_LARGE, **_binary_names(job[2], documents[job[2]])
                )
                return
        batch = batches[job[0]]
        batch.append(data)
        if len(batch) >= EXTRAS_BATCH or (
            job[0] == "binary" and sum(len(b.get("data") or "") for b in batch) > max_binary
        ):
            self._store_extras({job[0]: batch})

    def _store_extras(self, batches: dict[str, list[dict[str, Any]]]) -> None:
        """Store each kind's fetched references or Binaries like a page (one check, one
        transaction), and empty the batches."""
        for kind, batch in batches.items():
            if not batch:
                continue
            self._check_still_ours()
            resource_upsert_page(
                connection=self.connection,
                resources=list(batch),
                source_base_url=self.base,
                sync_run_id=self.run.pk,
                is_reference=kind == "ref",
            )
            batch.clear()

    def _binary_urls(self) -> dict[str, str]:
        """The attachments to download: this server's Binary URLs not stored yet, of an allowed
        content type, each with the id of a DocumentReference naming it. An attachment whose
        declared size is over the bound is not downloaded: it is recorded as an error."""
        allowed = set(S("FHIRLINK_SYNC_BINARY_CONTENT_TYPES", []))
        max_binary = int(S("FHIRLINK_SYNC_MAX_BINARY_BYTES", 10 * 1024 * 1024))
        have = set(
            SyncedResource.objects.filter(
                connection=self.connection, resource_type="Binary"
            ).values_list("fhir_id", flat=True)
        )
        base = self.base.rstrip("/") + "/Binary/"
        urls: dict[str, str] = {}
        too_large: dict[str, tuple[str, int]] = {}  # URL -> (DocumentReference id, declared)
        rows = SyncedResource.objects.filter(
            connection=self.connection, resource_type="DocumentReference", deleted_at__isnull=True
        ).order_by("fhir_id")
        try:
            cipher = vault.patient_cipher(patient_id=self.connection.patient_id, create=False)
        except vault.KeyDestroyed:
            return {}
        for row in rows.iterator(chunk_size=200):
            for content in resource_payload(row, cipher=cipher).get("content") or []:
                attachment = content.get("attachment") if isinstance(content, dict) else None
                if not isinstance(attachment, dict):
                    continue
                url = str(attachment.get("url") or "")
                if not url.startswith(base):  # only this server's Binary (never another host)
                    continue
                if url[len(base) :] in have:
                    continue
                if allowed and str(attachment.get("contentType", "")).split(";")[0] not in allowed:
                    continue
                size = attachment.get("size")
                if isinstance(size, int) and size > max_binary:
                    too_large.setdefault(url, (row.fhir_id, size))
                    continue
                urls.setdefault(url, row.fhir_id)
        for url, (document, size) in sorted(too_large.items()):
            if url in urls:
                continue  # another attachment names it without the size: the download decides
            self._add_error("Binary", BINARY_TOO_LARGE, **_binary_names(url, document), size=size)
        return urls


def _base64_size(text: str) -> int:
    """The decoded length of base64 `text` (whitespace ignored), without decoding it."""
    compact = "".join(text.split())
    return len(compact) * 3 // 4 - (len(compact) - len(compact.rstrip("=")))


def _binary_names(url: str, document: str) -> dict[str, str]:
    """What an error about the Binary at `url`, named by DocumentReference `document`, may say:
    the two ids (FHIR ids only: never the URL, which may carry a query, nor anything from the
    content)."""
    names: dict[str, str] = {}
    binary_id = url.rpartition("/Binary/")[2]
    if FHIR_ID.fullmatch(binary_id):
        names["id"] = binary_id
    if FHIR_ID.fullmatch(document):
        names["document"] = f"DocumentReference/{document}"
    return names

"""Hooks between the SMART launch and the sync engine, the synced-record store and engagement.

The sync engine fills these in; until then they do the safe minimum. Each is called by
`fhirlink.services` only, with primitive ids, after the surrounding transaction commits.

* `first_sync_start(connection_id=)`: after a successful launch (and a reconnect). Enqueues the
  Celery task named ``fhirlink.sync_connection`` (args: ``[connection_id]``) if a module defines
  it; otherwise does nothing.
* `synced_data_erase(connection_id=, patient_id=)`: disconnect with ``purge=true``. Must delete
  every synced row of that connection and return counts per resource type. Afterwards, if the
  patient has no other connection holding data, `fhirlink.services` destroys the patient's data
  key (cryptographic erasure of anything left behind).
* `sync_progress(connection=)`: what `GET /api/v1/connections/{id}` shows under ``sync``.
* `needs_reauth_notify(connection_id=)`: runs every dotted path in
  ``settings.FHIRLINK_NEEDS_REAUTH_HANDLERS`` with ``connection_id=<str>`` (engagement's
  "please reconnect" reminder registers there).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from fhirlink.models import Connection

logger = logging.getLogger(__name__)

SYNC_TASK_NAME = "fhirlink.sync_connection"


def _sync_task() -> Any | None:
    from celery import current_app

    import fhirlink.tasks  # noqa: F401  (registers fhirlink's tasks, the sync task among them)

    return current_app.tasks.get(SYNC_TASK_NAME)


def first_sync_start(*, connection_id: str) -> bool:
    """Enqueue the first sync if the sync engine exists. True if enqueued."""
    task = _sync_task()
    if task is None:
        logger.info(
            "connection %s: no %s task yet; first sync not started", connection_id, SYNC_TASK_NAME
        )
        return False
    task.apply_async(args=[connection_id])
    return True


def synced_data_erase(*, connection_id: str, patient_id: str) -> dict[str, int]:
    """Delete the connection's synced data; returns {resource_type: rows_erased}.

    Also stops a running sync of the connection at its next page.
    """
    from fhirlink.models import SyncRun
    from fhirlink.models.sync import ACTIVE_RUN_STATUSES
    from fhirlink.services.sync.store import synced_resources_erase

    SyncRun.objects.filter(connection_id=connection_id, status__in=ACTIVE_RUN_STATUSES).update(
        cancel_requested=True
    )
    return synced_resources_erase(connection_id=connection_id)


def sync_progress(*, connection: Connection) -> dict[str, Any] | None:
    """The sync progress the connections API reports (None before the first sync)."""
    from fhirlink.services.sync.progress import sync_progress_get

    return sync_progress_get(connection=connection)


def needs_reauth_notify(*, connection_id: str) -> None:
    for dotted in getattr(settings, "FHIRLINK_NEEDS_REAUTH_HANDLERS", []):
        try:
            import_string(dotted)(connection_id=connection_id)
        except Exception:
            # One failing handler must not stop the others; the status has already changed.
            logger.exception(
                "needs-reauth handler %s failed for connection %s", dotted, connection_id
            )

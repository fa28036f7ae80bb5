"""EHR link models: the health-system registry, connections, launch attempts, data keys."""

from fhirlink.models.connections import Connection, ConnectionStatus, LaunchAttempt
from fhirlink.models.health_systems import ClientAuth, HealthSystem, ScopeSyntax
from fhirlink.models.keys import PatientDataKey

__all__ = [
    "ClientAuth",
    "Connection",
    "ConnectionStatus",
    "HealthSystem",
    "LaunchAttempt",
    "PatientDataKey",
    "ScopeSyntax",
]
from fhirlink.models.store import SyncedResource, synced_payload_aad
from fhirlink.models.sync import (
    SyncQuarantine,
    SyncRun,
    SyncRunStatus,
    SyncStream,
    SyncTrigger,
    SyncWatermark,
)

__all__ += [
    "SyncQuarantine",
    "SyncRun",
    "SyncRunStatus",
    "SyncStream",
    "SyncTrigger",
    "SyncWatermark",
    "SyncedResource",
    "synced_payload_aad",
]
from fhirlink.models.directory import (
    DirectoryEntry,
    DirectoryImport,
    EndpointChange,
    EndpointHealth,
    EndpointState,
    EntryStatus,
    PlatformApp,
)

__all__ += [
    "DirectoryEntry",
    "DirectoryImport",
    "EndpointChange",
    "EndpointHealth",
    "EndpointState",
    "EntryStatus",
    "PlatformApp",
]

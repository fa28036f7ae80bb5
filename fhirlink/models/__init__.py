"""EHR link models: the health-system registry and directory, connections, launch attempts, data
keys, sync runs and the synced-record store."""

from fhirlink.models.connections import (
    MANAGED_RELATIONSHIPS,
    Connection,
    ConnectionStatus,
    LaunchAttempt,
    Relationship,
)
from fhirlink.models.directory import (
    DirectoryEntry,
    DirectoryImport,
    EndpointChange,
    EndpointHealth,
    EndpointState,
    EntryStatus,
    PlatformApp,
)
from fhirlink.models.health_systems import ClientAuth, HealthSystem, ScopeSyntax
from fhirlink.models.keys import PatientDataKey
from fhirlink.models.store import SyncedResource, synced_payload_aad
from fhirlink.models.sync import (
    SyncQuarantine,
    SyncRun,
    SyncRunStatus,
    SyncStream,
    SyncTrigger,
    SyncWatermark,
)

__all__ = [
    "MANAGED_RELATIONSHIPS",
    "ClientAuth",
    "Connection",
    "ConnectionStatus",
    "DirectoryEntry",
    "DirectoryImport",
    "EndpointChange",
    "EndpointHealth",
    "EndpointState",
    "EntryStatus",
    "HealthSystem",
    "LaunchAttempt",
    "PatientDataKey",
    "PlatformApp",
    "Relationship",
    "ScopeSyntax",
    "SyncQuarantine",
    "SyncRun",
    "SyncRunStatus",
    "SyncStream",
    "SyncTrigger",
    "SyncWatermark",
    "SyncedResource",
    "synced_payload_aad",
]

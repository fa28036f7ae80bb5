"""The EHR side: the FHIR client the sync uses and the per-health-system limiter
(`fhirlink.http` is the one HTTP client underneath both)."""

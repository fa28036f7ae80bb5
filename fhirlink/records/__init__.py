"""Patient records read side: selectors (patient-scoped queries), the friendly normalised view,
trends, the timeline, the changes feed and the FHIR export. The records API
(`fhirlink/api/records_views.py`) and the staff chart both build on these; nothing here writes
synced data (the sync engine owns `SyncedResource`), and nothing here writes the access log
(the caller does: one row per request).

For reuse (e.g. the staff chart), all keyword-only and patient-scoped:

* `selectors.records_live(patient=, resource_type=)`: live rows (no tombstones, entered-in-error
  (also Cerner's "entered-in-error " with a trailing space), masked or reference rows);
  `selectors.records_filter(qs, RecordFilters(...))`; `selectors.record_get(patient=,
  resource_type=, record_id=)`; `selectors.records_counts(patient=)`,
  `selectors.summary_counts(patient=)`; `selectors.record_rows(qs)` (a page as `RecordRow`s:
  the served columns and the health system in one query, no model instances);
  `selectors.sources_attach(rows)` (health system names for model rows, one query);
  `selectors.PayloadReader(patient)` (decrypts with one key fetch; None after purge).
* `normalize.record_normalize(row, resource, include_raw=False)`: the friendly dict (of a model
  row or a `RecordRow`);
  `normalize.demographics(resource)`, `normalize.preferred_coding`, `normalize.concept_text`,
  `normalize.unit_convert` and `normalize.CANONICAL_UNITS`.
* `paging.page_by_date_desc(qs, kind=, patient_id=, cursor=, size=)`: signed keyset pages of
  `RecordRow`s;
  `paging.rows_by_date_desc(qs, n)`.
* `summary.summary_build(patient=)`, `trends.trend_build(patient=, code=, ...)`,
  `trends.trend_codes_available(patient=)`, `timeline.timeline_page(...)`,
  `changes.changes_since(...)`, `export.export_request/export_state/export_download`.
"""

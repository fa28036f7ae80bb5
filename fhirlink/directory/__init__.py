"""The health-system directory (issue #22): import published endpoint lists, search them, turn a
picked entry into a connectable health system with the platform's one app registration, and
watch endpoint health.

* `importer.py`: parse Oracle's bundle / SMART User-access Brands bundles; `directory_import`.
* `search.py`: `directory_search` (ranked, typo-tolerant, accent-insensitive; same code on
  PostgreSQL and SQLite: an in-process token index rebuilt when the directory changes).
* `platform.py`: `directory_health_system_resolve` (lazy materialisation), `platform_app_save`.
* `health.py`: `endpoint_check`, `endpoint_checks_due`, `connection_ehr_status`.
* `text.py`: the one normalisation used for indexing and querying.
"""

"""The sync engine: permitted FHIR resources into the encrypted store (see engine.py)."""

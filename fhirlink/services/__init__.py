"""fhirlink's writes, one module per area: registry, discovery, launch, tokens, connections."""

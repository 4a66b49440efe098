//! FHIR R4 adapter (placeholder; see issue 5).

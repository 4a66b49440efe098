//! Static FHIR R4 (4.0.1) tables: the resource types a path may name and the Patient
//! CompartmentDefinition.
//!
//! Requirements: ACL-ROLE-1 (access per information category: a `patient/` token may only
//! reach its own compartment), ACL-PHR-1 (PHR data flows only for the consenting patient),
//! EX-SEG-1 (deny-by-default: a path naming a type outside this list never reaches a
//! backend), LOG-ACC-1 (the link fields are also where we read which patient a request or
//! response touched).
//!
//! Why static tables: they are consulted on every FHIR request, so they are sorted slices
//! searched with `binary_search`, never built at run time. The compartment rows follow
//! `CompartmentDefinition/patient` version 4.0.1 exactly (66 resource types); only the order
//! of the parameters inside a row differs where noted, because the first parameter is the
//! one the adapter appends to confine a search, and it should be the one that means "the
//! patient this record is about".

/// Every resource type of FHIR R4 4.0.1 (145) plus `Parameters`, sorted byte-wise so that
/// `binary_search` works. A path segment must match one of these exactly (FHIR type names
/// are case-sensitive).
pub static RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// One way a resource is tied to a patient: the compartment search parameter and the
/// element paths (dotted, relative to the resource, arrays traversed transparently) that
/// hold the `Reference`s that parameter searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Search parameter name from the CompartmentDefinition (`subject`, `patient`, ...).
    pub param: &'static str,
    /// Element paths of that parameter's R4 expression, e.g. `participant.actor`.
    pub paths: &'static [&'static str],
}

const fn l(param: &'static str, paths: &'static [&'static str]) -> Link {
    Link { param, paths }
}

/// R4 `CompartmentDefinition/patient`, sorted by resource type. Where the definition lists
/// several parameters, the first one here is the one used to confine searches (Coverage
/// uses `beneficiary`, Invoice and MedicationDispense use `patient`, MedicationAdministration
/// keeps `patient`; the set of parameters is unchanged).
static PATIENT_COMPARTMENT: &[(&str, &[Link])] = &[
    ("Account", &[l("subject", &["subject"])]),
    ("AdverseEvent", &[l("subject", &["subject"])]),
    (
        "AllergyIntolerance",
        &[
            l("patient", &["patient"]),
            l("recorder", &["recorder"]),
            l("asserter", &["asserter"]),
        ],
    ),
    ("Appointment", &[l("actor", &["participant.actor"])]),
    ("AppointmentResponse", &[l("actor", &["actor"])]),
    ("AuditEvent", &[l("patient", &["agent.who", "entity.what"])]),
    ("Basic", &[l("patient", &["subject"]), l("author", &["author"])]),
    ("BodyStructure", &[l("patient", &["patient"])]),
    (
        "CarePlan",
        &[
            l("patient", &["subject"]),
            l("performer", &["activity.detail.performer"]),
        ],
    ),
    (
        "CareTeam",
        &[l("patient", &["subject"]), l("participant", &["participant.member"])],
    ),
    ("ChargeItem", &[l("subject", &["subject"])]),
    ("Claim", &[l("patient", &["patient"]), l("payee", &["payee.party"])]),
    ("ClaimResponse", &[l("patient", &["patient"])]),
    ("ClinicalImpression", &[l("subject", &["subject"])]),
    (
        "Communication",
        &[
            l("subject", &["subject"]),
            l("sender", &["sender"]),
            l("recipient", &["recipient"]),
        ],
    ),
    (
        "CommunicationRequest",
        &[
            l("subject", &["subject"]),
            l("sender", &["sender"]),
            l("recipient", &["recipient"]),
            l("requester", &["requester"]),
        ],
    ),
    (
        "Composition",
        &[
            l("subject", &["subject"]),
            l("author", &["author"]),
            l("attester", &["attester.party"]),
        ],
    ),
    ("Condition", &[l("patient", &["subject"]), l("asserter", &["asserter"])]),
    ("Consent", &[l("patient", &["patient"])]),
    (
        "Coverage",
        &[
            l("beneficiary", &["beneficiary"]),
            l("policy-holder", &["policyHolder"]),
            l("subscriber", &["subscriber"]),
            l("payor", &["payor"]),
        ],
    ),
    ("CoverageEligibilityRequest", &[l("patient", &["patient"])]),
    ("CoverageEligibilityResponse", &[l("patient", &["patient"])]),
    ("DetectedIssue", &[l("patient", &["patient"])]),
    (
        "DeviceRequest",
        &[l("subject", &["subject"]), l("performer", &["performer"])],
    ),
    ("DeviceUseStatement", &[l("subject", &["subject"])]),
    ("DiagnosticReport", &[l("subject", &["subject"])]),
    (
        "DocumentManifest",
        &[
            l("subject", &["subject"]),
            l("author", &["author"]),
            l("recipient", &["recipient"]),
        ],
    ),
    (
        "DocumentReference",
        &[l("subject", &["subject"]), l("author", &["author"])],
    ),
    ("Encounter", &[l("patient", &["subject"])]),
    ("EnrollmentRequest", &[l("subject", &["candidate"])]),
    ("EpisodeOfCare", &[l("patient", &["patient"])]),
    (
        "ExplanationOfBenefit",
        &[l("patient", &["patient"]), l("payee", &["payee.party"])],
    ),
    ("FamilyMemberHistory", &[l("patient", &["patient"])]),
    ("Flag", &[l("patient", &["subject"])]),
    ("Goal", &[l("patient", &["subject"])]),
    ("Group", &[l("member", &["member.entity"])]),
    ("ImagingStudy", &[l("patient", &["subject"])]),
    ("Immunization", &[l("patient", &["patient"])]),
    ("ImmunizationEvaluation", &[l("patient", &["patient"])]),
    ("ImmunizationRecommendation", &[l("patient", &["patient"])]),
    (
        "Invoice",
        &[
            l("patient", &["subject"]),
            l("subject", &["subject"]),
            l("recipient", &["recipient"]),
        ],
    ),
    ("List", &[l("subject", &["subject"]), l("source", &["source"])]),
    ("MeasureReport", &[l("patient", &["subject"])]),
    ("Media", &[l("subject", &["subject"])]),
    (
        "MedicationAdministration",
        &[
            l("patient", &["subject"]),
            l("performer", &["performer.actor"]),
            l("subject", &["subject"]),
        ],
    ),
    (
        "MedicationDispense",
        &[
            l("patient", &["subject"]),
            l("subject", &["subject"]),
            l("receiver", &["receiver"]),
        ],
    ),
    ("MedicationRequest", &[l("subject", &["subject"])]),
    ("MedicationStatement", &[l("subject", &["subject"])]),
    ("MolecularSequence", &[l("patient", &["patient"])]),
    ("NutritionOrder", &[l("patient", &["patient"])]),
    (
        "Observation",
        &[l("subject", &["subject"]), l("performer", &["performer"])],
    ),
    ("Patient", &[l("link", &["link.other"])]),
    ("Person", &[l("patient", &["link.target"])]),
    (
        "Procedure",
        &[l("patient", &["subject"]), l("performer", &["performer.actor"])],
    ),
    ("Provenance", &[l("patient", &["target"])]),
    (
        "QuestionnaireResponse",
        &[l("subject", &["subject"]), l("author", &["author"])],
    ),
    ("RelatedPerson", &[l("patient", &["patient"])]),
    (
        "RequestGroup",
        &[l("subject", &["subject"]), l("participant", &["action.participant"])],
    ),
    ("ResearchSubject", &[l("individual", &["individual"])]),
    ("RiskAssessment", &[l("subject", &["subject"])]),
    ("Schedule", &[l("actor", &["actor"])]),
    (
        "ServiceRequest",
        &[l("subject", &["subject"]), l("performer", &["performer"])],
    ),
    ("Specimen", &[l("subject", &["subject"])]),
    ("SupplyDelivery", &[l("patient", &["patient"])]),
    ("SupplyRequest", &[l("subject", &["deliverTo"])]),
    ("VisionPrescription", &[l("patient", &["patient"])]),
];

/// How a path segment relates to the R4 resource type list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeLookup {
    /// Exact match: the canonical static name.
    Known(&'static str),
    /// Only a case-insensitive match exists (`patient`): the caller refuses, naming this.
    WrongCase(&'static str),
    /// Not an R4 resource type at all.
    Unknown,
}

/// Looks a path segment up in [`RESOURCE_TYPES`].
pub fn lookup_type(name: &str) -> TypeLookup {
    if let Ok(i) = RESOURCE_TYPES.binary_search(&name) {
        return TypeLookup::Known(RESOURCE_TYPES[i]);
    }
    // Only reached on the error path, so a linear scan is fine.
    match RESOURCE_TYPES.iter().find(|t| t.eq_ignore_ascii_case(name)) {
        Some(t) => TypeLookup::WrongCase(t),
        None => TypeLookup::Unknown,
    }
}

/// The links tying `resource_type` to the Patient compartment, or `None` when the type is
/// never in it (Medication, Organization, Practitioner, ...): such resources hold no
/// patient data, so a patient-scoped token may read them when its scopes name the type.
pub fn patient_links(resource_type: &str) -> Option<&'static [Link]> {
    PATIENT_COMPARTMENT
        .binary_search_by(|(t, _)| t.cmp(&resource_type))
        .ok()
        .map(|i| PATIENT_COMPARTMENT[i].1)
}

/// Every link of the compartment definition, for the response check's tokenizer (which
/// records the values under these paths' member names and skips the rest).
#[cfg(test)]
pub(crate) fn all_links() -> impl Iterator<Item = &'static Link> {
    PATIENT_COMPARTMENT.iter().flat_map(|(_, links)| links.iter())
}

/// Whether resources of this type can belong to a patient compartment.
pub fn in_patient_compartment(resource_type: &str) -> bool {
    patient_links(resource_type).is_some()
}

/// The search parameter the adapter appends (`name=Patient/{id}`) to confine a search of
/// this type to one patient. `Patient` itself is confined by `_id`, because its only
/// compartment parameter (`link`) finds *other* patients that link to this one.
pub fn confining_param(resource_type: &str) -> Option<&'static str> {
    if resource_type == "Patient" {
        return Some("_id");
    }
    patient_links(resource_type).map(|links| links[0].param)
}

/// Whether `param` (a bare search-parameter name, no modifier) is one of the compartment
/// parameters of `resource_type`, or the generic `patient` parameter many types define.
/// Values of these parameters name patients, so they are checked against the token's
/// patient.
pub fn is_patient_param(resource_type: &str, param: &str) -> bool {
    if param == "patient" {
        return true;
    }
    match patient_links(resource_type) {
        Some(links) => links.iter().any(|l| l.param == param),
        None => false,
    }
}

/// The patient id a reference string points at, if it points at a Patient on this server
/// (`Patient/1`, `Patient/1/_history/2`) or at one by absolute URL
/// (`https://host/fhir/Patient/1`). Contained (`#p1`) and `urn:uuid:` references have no
/// server identity and return `None`.
pub fn patient_id_of_reference(reference: &str) -> Option<&str> {
    let rest = if let Some(rest) = reference.strip_prefix("Patient/") {
        rest
    } else if reference.starts_with("http://") || reference.starts_with("https://") {
        let at = reference.rfind("/Patient/")?;
        // `/Patient/1/_history/2`: rfind may land on the right segment only if no later
        // `/Patient/` exists, which a valid URL cannot have after the id.
        &reference[at + "/Patient/".len()..]
    } else {
        return None;
    };
    let id = match rest.find('/') {
        Some(slash) => {
            let tail = &rest[slash..];
            // Only a version suffix may follow the id.
            if !tail.starts_with("/_history/") {
                return None;
            }
            &rest[..slash]
        }
        None => rest,
    };
    if crate::normalize::is_valid_id(id) {
        Some(id)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(RESOURCE_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert!(PATIENT_COMPARTMENT.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(RESOURCE_TYPES.len(), 146);
        assert_eq!(PATIENT_COMPARTMENT.len(), 66);
        for (t, links) in PATIENT_COMPARTMENT {
            assert!(RESOURCE_TYPES.contains(t), "{t} not a resource type");
            assert!(!links.is_empty());
        }
    }

    #[test]
    fn rows_match_r4_definition() {
        let params = |t| patient_links(t).unwrap().iter().map(|l| l.param).collect::<Vec<_>>();
        assert_eq!(params("Observation"), ["subject", "performer"]);
        assert_eq!(params("Condition"), ["patient", "asserter"]);
        assert_eq!(params("MedicationRequest"), ["subject"]);
        assert_eq!(params("Encounter"), ["patient"]);
        assert_eq!(params("DocumentReference"), ["subject", "author"]);
        assert_eq!(params("AllergyIntolerance"), ["patient", "recorder", "asserter"]);
        assert_eq!(params("Patient"), ["link"]);
        assert!(patient_links("Medication").is_none());
        assert!(patient_links("Organization").is_none());
        assert!(patient_links("Practitioner").is_none());
        assert!(patient_links("Device").is_none());
        assert_eq!(confining_param("Observation"), Some("subject"));
        assert_eq!(confining_param("Patient"), Some("_id"));
        assert_eq!(confining_param("Coverage"), Some("beneficiary"));
        assert_eq!(confining_param("Practitioner"), None);
    }

    #[test]
    fn resource_types_are_known_in_the_wrong_case_or_unknown() {
        assert_eq!(lookup_type("Patient"), TypeLookup::Known("Patient"));
        assert_eq!(lookup_type("patient"), TypeLookup::WrongCase("Patient"));
        assert_eq!(lookup_type("PATIENT"), TypeLookup::WrongCase("Patient"));
        assert_eq!(lookup_type("Patients"), TypeLookup::Unknown);
    }

    #[test]
    fn only_a_patient_reference_yields_a_patient_id() {
        assert_eq!(patient_id_of_reference("Patient/123"), Some("123"));
        assert_eq!(patient_id_of_reference("Patient/123/_history/4"), Some("123"));
        assert_eq!(
            patient_id_of_reference("https://ehr.example/fhir/Patient/123"),
            Some("123")
        );
        assert_eq!(patient_id_of_reference("Group/123"), None);
        assert_eq!(patient_id_of_reference("#p1"), None);
        assert_eq!(patient_id_of_reference("urn:uuid:1234"), None);
        assert_eq!(patient_id_of_reference("Patient/1/Observation"), None);
        assert_eq!(patient_id_of_reference("Patient/"), None);
    }
}

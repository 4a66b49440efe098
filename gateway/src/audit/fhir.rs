//! Access records as FHIR R4 `AuditEvent`s following IHE Basic Audit Log
//! Patterns (BALP) (LOG-ACC-1, INC-MHLW-1, DATA-INT-1).
//!
//! Medical-information systems and their auditors increasingly read audit
//! trails as FHIR; BALP defines how a RESTful access is expressed:
//! `type` = `rest`, `subtype` = the FHIR interaction, `action` C/R/U/D/E,
//! agents for the client application, the server and the user (requestor),
//! the gateway as `source.observer`, and entities for the patient (role 1),
//! the resource touched and, for searches, the query. The query entity holds
//! the query with values removed (`name=***`), never the values themselves
//! (DATA-RES-1).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::record::{AccessDecision, AccessRecord};

const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";

/// BALP action code for a FHIR interaction.
pub fn action_code(interaction: &str) -> &'static str {
    match interaction {
        "create" => "C",
        "read" | "vread" | "history-instance" | "history-type" | "history-system" | "capabilities" => "R",
        "update" | "patch" => "U",
        "delete" => "D",
        _ => "E", // search-*, operation, batch, transaction
    }
}

/// The BALP profile that applies, if any: the `Patient*` variants when the
/// request touched patients, the plain ones otherwise.
pub fn balp_profile(interaction: &str, has_patient: bool) -> Option<String> {
    let base = match interaction {
        "read" | "vread" => "Read",
        "search-type" | "search-system" | "search-compartment" | "search" => "Query",
        "create" => "Create",
        "update" | "patch" => "Update",
        "delete" => "Delete",
        _ => return None,
    };
    Some(format!("{BALP}{}{base}", if has_patient { "Patient" } else { "" }))
}

/// BALP outcome: 0 success, 4 minor failure (refused / 4xx), 8 serious (5xx).
pub fn outcome_code(rec: &AccessRecord) -> &'static str {
    if rec.status >= 500 {
        "8"
    } else if rec.status >= 400 || rec.decision == AccessDecision::Refused {
        "4"
    } else {
        "0"
    }
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// One `AuditEvent` for one record.
pub fn audit_event(record_id: &str, rec: &AccessRecord) -> Value {
    let interaction = rec.interaction.as_deref().unwrap_or("operation");
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": record_id,
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
        "subtype": [coding("http://hl7.org/fhir/restful-interaction", interaction, interaction)],
        "action": action_code(interaction),
        "recorded": super::time::format_rfc3339_ms(rec.time),
        "outcome": outcome_code(rec),
        "source": {
            "observer": { "display": format!("phr-gateway {}", rec.instance) },
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "3", "Web Server")],
        },
    });
    if let Some(p) = balp_profile(interaction, !rec.patients.is_empty()) {
        ev["meta"] = json!({ "profile": [p] });
    }
    if let Some(reason) = &rec.reason {
        ev["outcomeDesc"] = json!(reason);
    }
    let mut client = json!({
        "type": { "coding": [coding(DCM, "110153", "Source Role ID")] },
        "who": { "identifier": { "value": rec.client_id.as_deref().unwrap_or("unknown") } },
        "requestor": false,
        "network": { "address": rec.source_ip, "type": "2" },
    });
    if let Some(fp) = &rec.client_cert_fingerprint {
        client["altId"] = json!(fp);
    }
    let mut agents = vec![client];
    agents.push(json!({
        "type": { "coding": [coding(DCM, "110152", "Destination Role ID")] },
        "who": { "display": rec.upstream.as_deref().unwrap_or(&rec.route) },
        "requestor": false,
        "network": { "address": rec.upstream_addr.as_deref().unwrap_or(""), "type": "1" },
    }));
    if let Some(sub) = &rec.subject {
        let mut user = json!({
            "type": { "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient")] },
            "who": { "identifier": { "system": rec.token_issuer.as_deref().unwrap_or(""), "value": sub } },
            "requestor": true,
        });
        if let Some(jti) = &rec.jti {
            user["policy"] = json!([jti]);
        }
        agents.push(user);
    }
    ev["agent"] = Value::Array(agents);
    let mut entities: Vec<Value> = rec
        .patients
        .iter()
        .map(|p| {
            json!({
                "what": { "reference": format!("Patient/{p}") },
                "type": coding(ENTITY_TYPE, "1", "Person"),
                "role": coding(OBJECT_ROLE, "1", "Patient"),
            })
        })
        .collect();
    if let Some(rt) = &rec.resource_type {
        let reference = match &rec.resource_id {
            Some(id) => format!("{rt}/{id}"),
            None => rt.clone(),
        };
        if !(rt == "Patient" && rec.resource_id.as_ref().is_some_and(|id| rec.patients.contains(id))) {
            entities.push(json!({
                "what": { "reference": reference },
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
            }));
        }
    }
    if action_code(interaction) == "E" && rec.path.contains('?') {
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "query": B64.encode(format!("{} {}", rec.method, rec.path)),
            "description": "query parameter names only; values are not recorded",
        }));
    }
    if !entities.is_empty() {
        ev["entity"] = Value::Array(entities);
    }
    ev
}

fn urn_uuid(record_id: &str) -> String {
    if record_id.len() == 32 && record_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let r = record_id;
        format!(
            "urn:uuid:{}-{}-{}-{}-{}",
            &r[..8],
            &r[8..12],
            &r[12..16],
            &r[16..20],
            &r[20..]
        )
    } else {
        format!("urn:phr-gateway:audit:{record_id}")
    }
}

/// A `Bundle` of type `collection` holding one `AuditEvent` per record.
pub fn bundle(records: &[(&str, &AccessRecord)]) -> Value {
    let entries: Vec<Value> = records
        .iter()
        .map(|(id, rec)| json!({ "fullUrl": urn_uuid(id), "resource": audit_event(id, rec) }))
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": super::time::format_rfc3339_ms(super::time::now_ms()),
        "entry": entries,
    })
}

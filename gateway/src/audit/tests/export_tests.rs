//! Export (JSON lines, FHIR BALP AuditEvent), review report, purge.

use serde_json::Value;

use super::{all_time, sample, Fx};
use crate::audit::export::{export, ExportFormat, ExportQuery};
use crate::audit::purge::{purge, DEFAULT_RETENTION_DAYS};
use crate::audit::record::{scrub_path, AccessDecision};
use crate::audit::report::{review_report, ReviewConfig};
use crate::audit::time::{now_ms, parse_rfc3339};
use crate::audit::verify::verify;

#[tokio::test]
async fn fhir_export_has_balp_fields() {
    for fx in Fx::all().await {
        let mut search = sample(1);
        search.interaction = Some("search-type".into());
        search.resource_id = None;
        // A query value no timestamp, id or count in the export can contain by chance
        // (a plain "1234" did, now and then: a flaky test).
        search.path = scrub_path("/fhir/Observation?patient=patient-0001&code=query-value-x7q");
        let mut refused = sample(2);
        refused.decision = AccessDecision::Refused;
        refused.status = 403;
        refused.reason = Some("compartment".into());
        fx.write("gw-a", vec![sample(0), search, refused]).await;

        let mut out = Vec::new();
        let sum = export(&fx.store, fx.kek.as_ref(), &all_time(), ExportFormat::Fhir, &mut out)
            .await
            .unwrap();
        assert_eq!((sum.exported, sum.unreadable), (3, 0), "{}", fx.db.name);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("query-value-x7q") && !text.contains("=patient-0001"),
            "query values leaked"
        );
        let b: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "collection");
        let evs: Vec<&Value> = b["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
        assert_eq!(evs.len(), 3);
        for e in &evs {
            assert_eq!(e["resourceType"], "AuditEvent");
            assert_eq!(
                e["type"]["system"],
                "http://terminology.hl7.org/CodeSystem/audit-event-type"
            );
            assert_eq!(e["type"]["code"], "rest");
            assert_eq!(e["subtype"][0]["system"], "http://hl7.org/fhir/restful-interaction");
            assert!(parse_rfc3339(e["recorded"].as_str().unwrap()).is_ok());
            assert!(e["source"]["observer"]["display"].as_str().unwrap().contains("gw-a"));
            let agents = e["agent"].as_array().unwrap();
            let user = agents
                .iter()
                .find(|a| a["requestor"] == true)
                .expect("a requestor agent");
            assert!(user["who"]["identifier"]["value"]
                .as_str()
                .unwrap()
                .starts_with("doctor-"));
            assert_eq!(user["who"]["identifier"]["system"], "https://idp.example");
            assert!(agents
                .iter()
                .any(|a| a["who"]["identifier"]["value"] == "phr-app" && a["network"]["address"] == "127.0.0.1"));
            let ents = e["entity"].as_array().unwrap();
            assert!(ents.iter().any(|x| x["role"]["code"] == "1"
                && x["what"]["reference"].as_str().unwrap().starts_with("Patient/patient-")));
        }
        let (read, search, refused) = (evs[0], evs[1], evs[2]);
        assert_eq!(read["action"], "R");
        assert_eq!(read["subtype"][0]["code"], "read");
        assert_eq!(read["outcome"], "0");
        assert_eq!(
            read["meta"]["profile"][0],
            "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
        );
        assert_eq!(search["action"], "E");
        assert_eq!(
            search["meta"]["profile"][0],
            "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
        );
        assert!(search["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["role"]["code"] == "24"));
        assert_eq!(refused["outcome"], "4");
        assert_eq!(refused["outcomeDesc"], "compartment");
    }
}

#[tokio::test]
async fn jsonl_export_filters_by_patient_and_subject() {
    for fx in Fx::all().await {
        fx.write("gw-a", (0..15).map(sample).collect()).await;
        let mut out = Vec::new();
        let q = ExportQuery {
            patient: Some("patient-0002".into()),
            ..all_time()
        };
        let sum = export(&fx.store, fx.kek.as_ref(), &q, ExportFormat::Jsonl, &mut out)
            .await
            .unwrap();
        assert_eq!(sum.exported, 3, "{}", fx.db.name); // i = 2, 7, 12
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.iter().all(|l| l["record"]["patients"][0] == "patient-0002"));
        assert_eq!(lines[0]["seq"], 3);
        let q = ExportQuery {
            subject: Some("doctor-1".into()),
            from_ms: sample(5).time,
            to_ms: sample(11).time,
            ..Default::default()
        };
        let sum = export(&fx.store, fx.kek.as_ref(), &q, ExportFormat::Jsonl, &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(sum.exported, 2, "{}", fx.db.name); // i = 7, 10
    }
}

#[tokio::test]
async fn review_report_lists_top_off_hours_wide_and_refused() {
    for fx in Fx::all().await {
        let mut recs: Vec<_> = (0..30).map(sample).collect();
        recs[3].time = parse_rfc3339("2025-04-01T23:15:00+09:00").unwrap(); // Tuesday night JST
        recs[4].decision = AccessDecision::Refused;
        recs[4].reason = Some("token_revoked".into());
        for (i, r) in recs.iter_mut().enumerate().skip(10) {
            r.subject = Some("nurse-x".into());
            r.patients = vec![format!("p-{i}")];
        }
        fx.write("gw-a", recs).await;
        let cfg = ReviewConfig {
            many_patients: 15,
            ..Default::default()
        };
        let text = review_report(&fx.store, fx.kek.as_ref(), 0, i64::MAX / 2, &cfg)
            .await
            .unwrap();
        assert!(text.contains("      20  nurse-x"), "{text}");
        assert!(
            text.contains("off-hours access (outside 08:00-20:00 and weekends, UTC+9): 1"),
            "{text}"
        );
        assert!(text.contains("2025-04-01 23:15 (UTC+9)  doctor-0"), "{text}");
        assert!(
            text.contains("subjects touching >= 15 distinct patients ==\n      20  nurse-x"),
            "{text}"
        );
        assert!(text.contains("       1  token_revoked"), "{text}");
    }
}

#[tokio::test]
async fn purge_keeps_verification_green() {
    for fx in Fx::all().await {
        let now = now_ms();
        let day = 86_400_000i64;
        let mut recs: Vec<_> = (0..8).map(sample).collect();
        for (i, r) in recs.iter_mut().enumerate() {
            r.time = if i < 5 { now - 2000 * day } else { now - day };
        }
        fx.write("gw-a", recs).await;
        let report = purge(&fx.store, &fx.signer, DEFAULT_RETENTION_DAYS, now).await.unwrap();
        assert_eq!(report.chains.len(), 1, "{}", fx.db.name);
        assert_eq!((report.chains[0].deleted, report.chains[0].through_seq), (5, 5));
        let v = verify(&fx.store, &fx.trusted()).await.unwrap();
        assert!(v.is_intact(), "{}: {v}", fx.db.name);
        assert_eq!((v.chains[0].start_seq, v.chains[0].records), (5, 3));
        // Purging again does nothing; the chain continues after the purge.
        assert!(purge(&fx.store, &fx.signer, DEFAULT_RETENTION_DAYS, now)
            .await
            .unwrap()
            .chains
            .is_empty());
        fx.write("gw-a", vec![sample(100)]).await;
        let v = verify(&fx.store, &fx.trusted()).await.unwrap();
        assert!(v.is_intact() && v.chains[0].last_seq == 9, "{}: {v}", fx.db.name);
        // Deleting the first surviving record without a purge checkpoint is still caught.
        sqlx::query("DELETE FROM audit_records WHERE seq = 6")
            .execute(fx.store.pool())
            .await
            .unwrap();
        assert!(!verify(&fx.store, &fx.trusted()).await.unwrap().is_intact());
    }
}

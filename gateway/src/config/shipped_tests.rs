//! The configurations shipped in `deploy/` load: strict parsing and every validation
//! rule, so a renamed key or a new rule cannot leave a deployment example that refuses
//! to start. Their files (certificates, keys) exist only where they are deployed, so a
//! missing file is the one problem accepted here; `check-config` there checks them.

use super::{load_str, LoadError};
use std::path::Path;

/// `${VAR}` references the deployments fill from their secrets, with stand-in values.
const SECRETS: [(&str, &str); 3] = [
    ("${PHR_DATABASE_URL}", "postgres://phr:secret@postgres:5432/phr"),
    ("${PHR_REDIS_PASSWORD}", "secret"),
    ("${PHR_AUDIT_KEK}", "c2VjcmV0"),
];

fn load_shipped(relative: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    for (var, value) in SECRETS {
        text = text.replace(var, value);
    }
    match load_str(&text, &path) {
        Ok(_) => {}
        Err(LoadError::Invalid { issues, .. }) => {
            let other: Vec<String> = issues
                .iter()
                .filter(|i| !i.problem.contains("does not exist or is not a file"))
                .map(|i| i.to_string())
                .collect();
            assert!(other.is_empty(), "{relative} is not valid:\n{}", other.join("\n"));
        }
        Err(e) => panic!("{relative} does not load:\n{e}"),
    }
}

#[test]
fn the_kubernetes_config_loads() {
    load_shipped("deploy/kubernetes/base/gateway.toml");
}

#[test]
fn the_compose_config_loads() {
    load_shipped("deploy/compose/gateway.toml");
}

//! Configuration text the end-to-end tests share.

use crate::tokens;
use std::path::Path;

/// Route keys of a FHIR route that requires a token (for `route_with`'s `route_extra`).
pub const FHIR_ROUTE: &str = "fhir = true\n[routes.auth]\nmode = \"required\"\n";

/// `[[auth.issuers]]` for the fixtures' issuer and audience, its key set read from
/// `dir/jwks.json` (written there first if missing; no JWKS server needed).
pub fn issuer(dir: &Path) -> String {
    let jwks = dir.join("jwks.json");
    if !jwks.exists() {
        std::fs::write(&jwks, tokens::default_jwks()).unwrap();
    }
    format!(
        "[[auth.issuers]]\nissuer = \"{}\"\njwks_file = \"{}\"\naudiences = [\"{}\"]\n",
        tokens::ISS,
        jwks.display(),
        tokens::AUD
    )
}

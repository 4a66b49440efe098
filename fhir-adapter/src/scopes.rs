//! SMART App Launch 2 scopes (with the v1 `.read` / `.write` / `.*` forms).
//!
//! Requirements: ACL-ROLE-1 (rights per information category: each scope names a resource
//! type and the interactions allowed on it; anything not granted is denied), ACL-PHR-1
//! (`patient/` scopes bind the token to the patient who consented at launch).
//!
//! Decisions (see README): v2 letters must be in canonical `cruds` order, as the SMART 2
//! grammar requires; an out-of-order or unknown letter makes the whole scope invalid, and
//! invalid scopes grant nothing (they are kept in [`Scopes::invalid`] for the access
//! record). Granular constraints (`patient/Observation.rs?category=laboratory`) grant only
//! *searches* that carry every constraint parameter with exactly that value; they grant no
//! read, write or history, because checking a constraint on a single resource would need
//! the search parameter's FHIRPath evaluated on the response.
//!
//! Scopes are parsed once per token (the gateway caches the parsed value with the verified
//! token), so parsing may allocate; checking does not.

use crate::compartment::{lookup_type, TypeLookup};
use crate::error::FhirError;
use crate::normalize::parse_query;

/// The context prefix of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `patient/`: confined to the token's patient compartment.
    Patient,
    /// `user/`: whatever the user may see; the backend's own rules apply, no confinement here.
    User,
    /// `system/`: backend services; no confinement here.
    System,
}

impl Level {
    /// The scope prefix: `patient`, `user` or `system` (without the `/`).
    pub fn prefix(self) -> &'static str {
        match self {
            Level::Patient => "patient",
            Level::User => "user",
            Level::System => "system",
        }
    }
}

/// A set of SMART v2 permission letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms(u8);

impl Perms {
    /// `c`: create.
    pub const C: Perms = Perms(1);
    /// `r`: read, vread, instance history.
    pub const R: Perms = Perms(2);
    /// `u`: update, patch.
    pub const U: Perms = Perms(4);
    /// `d`: delete.
    pub const D: Perms = Perms(8);
    /// `s`: search, type history.
    pub const S: Perms = Perms(16);
    /// All five letters.
    pub const ALL: Perms = Perms(31);

    /// Union of two sets.
    pub const fn union(self, o: Perms) -> Perms {
        Perms(self.0 | o.0)
    }

    /// Whether every letter of `o` is in `self`.
    pub const fn contains(self, o: Perms) -> bool {
        self.0 & o.0 == o.0
    }

    /// Parses v2 letters in canonical order (`rs`, `cud`, `cruds`); `None` if empty,
    /// repeated, unknown or out of order.
    pub fn from_v2(letters: &str) -> Option<Perms> {
        const ORDER: [(u8, Perms); 5] = [
            (b'c', Perms::C),
            (b'r', Perms::R),
            (b'u', Perms::U),
            (b'd', Perms::D),
            (b's', Perms::S),
        ];
        if letters.is_empty() {
            return None;
        }
        let mut next = 0;
        let mut p = Perms::default();
        for b in letters.bytes() {
            let at = ORDER[next..].iter().position(|(l, _)| *l == b)? + next;
            p = p.union(ORDER[at].1);
            next = at + 1;
        }
        Some(p)
    }

    /// The letters, in canonical order.
    pub fn letters(self) -> String {
        "cruds"
            .chars()
            .zip([Perms::C, Perms::R, Perms::U, Perms::D, Perms::S])
            .filter(|(_, p)| self.contains(*p))
            .map(|(c, _)| c)
            .collect()
    }

    pub(crate) fn letter(self) -> char {
        self.letters().chars().next().unwrap_or('?')
    }
}

/// One parsed resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    /// `patient`, `user` or `system`.
    pub level: Level,
    /// A resource type, or `*`.
    pub resource_type: String,
    /// Granted letters.
    pub perms: Perms,
    /// Granular constraints (`?category=laboratory`), decoded; empty when unconstrained.
    pub constraints: Vec<(String, String)>,
}

impl ResourceScope {
    fn covers(&self, resource_type: &str) -> bool {
        self.resource_type == "*" || self.resource_type == resource_type
    }
}

/// The outcome of a scope check: whether confinement to the patient applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Granted by a `user/` or `system/` scope: no compartment confinement by the gateway.
    Unconfined,
    /// Granted only by a `patient/` scope: the request must stay in the patient compartment.
    Patient,
}

/// All scopes of one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    resource: Vec<ResourceScope>,
    ignored: Vec<String>,
    invalid: Vec<String>,
}

impl Scopes {
    /// Parses scope strings. Non-resource scopes (`openid`, `fhirUser`, `launch/patient`,
    /// `offline_access`, ...) are accepted and ignored; malformed resource scopes are kept
    /// in [`Scopes::invalid`] and grant nothing.
    pub fn parse<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Scopes {
        let mut out = Scopes::default();
        for s in scopes {
            if s.is_empty() {
                continue;
            }
            let level = if s.starts_with("patient/") {
                Level::Patient
            } else if s.starts_with("user/") {
                Level::User
            } else if s.starts_with("system/") {
                Level::System
            } else {
                out.ignored.push(s.to_owned());
                continue;
            };
            match parse_resource_scope(level, s) {
                Some(rs) => out.resource.push(rs),
                None => out.invalid.push(s.to_owned()),
            }
        }
        out
    }

    /// Parses a space-separated `scope` claim.
    pub fn parse_str(scope_claim: &str) -> Scopes {
        Scopes::parse(scope_claim.split_ascii_whitespace())
    }

    /// The resource scopes that parsed.
    pub fn resource_scopes(&self) -> &[ResourceScope] {
        &self.resource
    }

    /// Non-resource scopes, accepted and ignored.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// Resource scopes that did not parse (they grant nothing).
    pub fn invalid(&self) -> &[String] {
        &self.invalid
    }

    /// Checks that some scope grants `perm` on `resource_type` for a request carrying
    /// `params`. A `user/`/`system/` grant wins over a `patient/` one, since it needs no
    /// confinement.
    pub fn check(&self, resource_type: &str, perm: Perms, params: &[(String, String)]) -> Result<Grant, FhirError> {
        let mut patient = false;
        let mut unmet: Option<&ResourceScope> = None;
        for s in &self.resource {
            if !s.covers(resource_type) || !s.perms.contains(perm) {
                continue;
            }
            let applies = if s.constraints.is_empty() {
                true
            } else if perm == Perms::S {
                s.constraints
                    .iter()
                    .all(|c| params.iter().any(|p| p.0 == c.0 && p.1 == c.1))
            } else {
                false
            };
            if !applies {
                unmet.get_or_insert(s);
                continue;
            }
            match s.level {
                Level::User | Level::System => return Ok(Grant::Unconfined),
                Level::Patient => patient = true,
            }
        }
        if patient {
            return Ok(Grant::Patient);
        }
        Err(match unmet {
            Some(s) => FhirError::ScopeConstraintUnmet {
                permission: perm.letter(),
                family: s.level,
                resource_type: resource_type.to_owned(),
                constraint: s
                    .constraints
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&"),
            },
            None => FhirError::ScopeMissing {
                permission: perm.letter(),
                resource_type: resource_type.to_owned(),
                family: self.family(),
            },
        })
    }

    /// The scope family a refusal's hint should name: `user/` if the token has any
    /// `user/` resource scope, else `system/` if it has a `system/` one, else `patient/`
    /// (also for a token without resource scopes, the common SMART app launch case).
    /// A practitioner's app asked for `patient/...` would need another kind of login.
    pub fn family(&self) -> Level {
        let has = |l: Level| self.resource.iter().any(|s| s.level == l);
        if has(Level::User) {
            Level::User
        } else if has(Level::System) {
            Level::System
        } else {
            Level::Patient
        }
    }

    /// Whether any scope (constraints ignored) lets the client read or search this type;
    /// used to drop `_include`d resources of types the client has no scope for.
    pub fn may_see(&self, resource_type: &str) -> bool {
        let rs = Perms::R.union(Perms::S);
        self.resource
            .iter()
            .any(|s| s.covers(resource_type) && s.perms.0 & rs.0 != 0)
    }

    /// Whether an unconstrained `user/` or `system/` scope grants `perm` on `resource_type`
    /// (bulk export and other cross-patient operations need one).
    pub fn grants_unconfined(&self, resource_type: &str, perm: Perms) -> bool {
        self.resource.iter().any(|s| {
            s.level != Level::Patient && s.covers(resource_type) && s.perms.contains(perm) && s.constraints.is_empty()
        })
    }
}

fn parse_resource_scope(level: Level, s: &str) -> Option<ResourceScope> {
    let (_, rest) = s.split_once('/')?;
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (rt, perm) = main.rsplit_once('.')?;
    let resource_type = if rt == "*" {
        "*"
    } else {
        match lookup_type(rt) {
            TypeLookup::Known(t) => t,
            _ => return None,
        }
    };
    let perms = match perm {
        "read" => Perms::R.union(Perms::S),
        "write" => Perms::C.union(Perms::U).union(Perms::D),
        "*" => Perms::ALL,
        letters => Perms::from_v2(letters)?,
    };
    let constraints = match query {
        Some(q) => {
            let c = parse_query(q).ok()?;
            if c.is_empty() || c.iter().any(|(k, _)| k.is_empty()) {
                return None;
            }
            c
        }
        None => Vec::new(),
    };
    Some(ResourceScope {
        level,
        resource_type: resource_type.to_owned(),
        perms,
        constraints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_permission_letters_must_be_distinct_and_in_cruds_order() {
        assert_eq!(Perms::from_v2("rs"), Some(Perms::R.union(Perms::S)));
        assert_eq!(Perms::from_v2("cruds"), Some(Perms::ALL));
        assert_eq!(Perms::from_v2("sr"), None);
        assert_eq!(Perms::from_v2("rr"), None);
        assert_eq!(Perms::from_v2("x"), None);
        assert_eq!(Perms::from_v2(""), None);
        assert_eq!(Perms::ALL.letters(), "cruds");
    }
}

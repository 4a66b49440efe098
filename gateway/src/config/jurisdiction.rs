//! Where a server is: an ISO 3166-1 alpha-2 code, validated while the file is read.
//!
//! Every target the gateway sends data to or keeps data in declares one (DATA-JP-1);
//! [`crate::residency::jurisdiction`] checks the declarations against
//! `residency.required`. A bad code is a configuration error with the fix, never a
//! refusal at connection time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 3166-1 alpha-2 country code naming where a server is located.
///
/// Kept as a validated two-letter code rather than a free string so that
/// `"jp"`, `"JPN"` or `"Japan"` cannot silently fail to match `"JP"` and be
/// treated as "some other country" (or worse, as equal by a sloppy
/// comparison elsewhere). Parsing is strict; errors suggest the fix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jurisdiction([u8; 2]);

impl Jurisdiction {
    /// Japan, the only jurisdiction DATA-JP-1 accepts for medical data.
    pub const JP: Jurisdiction = Jurisdiction(*b"JP");

    /// Parses and validates a code such as `"JP"`.
    ///
    /// Exists so that configuration typos are rejected at start-up with a
    /// message saying what to write instead, never at connection time.
    pub fn parse(text: &str) -> Result<Self, JurisdictionError> {
        let given = text.to_owned();
        if text.is_empty() {
            return Err(JurisdictionError::Empty);
        }
        let bytes = text.as_bytes();
        if bytes.len() == 2 && bytes.iter().all(u8::is_ascii_uppercase) {
            let code = [bytes[0], bytes[1]];
            if is_user_assigned(code) {
                return Err(JurisdictionError::UserAssigned { given });
            }
            return Ok(Jurisdiction(code));
        }
        // Work out the most likely intended code for the error message.
        let trimmed = text.trim();
        let upper = trimmed.to_ascii_uppercase();
        if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(JurisdictionError::NotCanonical {
                given,
                suggestion: upper,
            });
        }
        let suggestion = match upper.as_str() {
            "JPN" | "JAPAN" | "日本" => Some("JP".to_owned()),
            _ => None,
        };
        Err(JurisdictionError::NotAlpha2 { given, suggestion })
    }

    /// The code as text, e.g. `"JP"`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII uppercase by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// A human name for messages ("Japan" for JP, the code otherwise), so
    /// fix messages read naturally without shipping a country table.
    pub fn describe(&self) -> String {
        if *self == Self::JP {
            "Japan".to_owned()
        } else {
            format!("the country with ISO code {}", self.as_str())
        }
    }
}

/// ISO 3166-1 reserves these for private use; they never name a country, so
/// accepting one would let a placeholder pass as a real declaration.
fn is_user_assigned(code: [u8; 2]) -> bool {
    matches!(code, [b'A', b'A'] | [b'Q', b'M'..=b'Z'] | [b'X', _] | [b'Z', b'Z'])
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jurisdiction({})", self.as_str())
    }
}

impl FromStr for Jurisdiction {
    type Err = JurisdictionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Jurisdiction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Jurisdiction {
    /// Validates while deserializing so a bad code in the config file is a
    /// config error with the fix message, not a runtime refusal.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a jurisdiction string was rejected; each message says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JurisdictionError {
    /// Nothing was written; an empty declaration must not count as one.
    #[error("jurisdiction is empty; write the ISO 3166-1 alpha-2 code of the country where the server is located, e.g. \"JP\"")]
    Empty,
    /// Right letters, wrong form (lower case or surrounding spaces).
    #[error("jurisdiction {given:?} must be two upper-case letters; write {suggestion:?}")]
    NotCanonical {
        /// The text as given.
        given: String,
        /// The canonical spelling to use instead.
        suggestion: String,
    },
    /// Not a two-letter code at all (a name, an alpha-3 code, ...).
    #[error("jurisdiction {given:?} is not an ISO 3166-1 alpha-2 code (two letters A-Z){}", match suggestion { Some(s) => format!("; write {s:?}"), None => String::from("; for Japan write \"JP\"") })]
    NotAlpha2 {
        /// The text as given.
        given: String,
        /// The code we think was meant, if any.
        suggestion: Option<String>,
    },
    /// A private-use code (AA, QM-QZ, XA-XZ, ZZ) such as a placeholder "XX".
    #[error("jurisdiction {given:?} is a user-assigned ISO 3166-1 code, not a country; write the real country code, e.g. \"JP\"")]
    UserAssigned {
        /// The text as given.
        given: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_codes() {
        assert_eq!(Jurisdiction::parse("JP").unwrap(), Jurisdiction::JP);
        assert_eq!("US".parse::<Jurisdiction>().unwrap().as_str(), "US");
        assert_eq!(Jurisdiction::JP.to_string(), "JP");
    }

    #[test]
    fn lower_case_is_refused_with_suggestion() {
        let err = Jurisdiction::parse("jp").unwrap_err();
        assert_eq!(
            err,
            JurisdictionError::NotCanonical {
                given: "jp".into(),
                suggestion: "JP".into()
            }
        );
        assert!(err.to_string().contains("write \"JP\""), "{err}");
        assert!(matches!(
            Jurisdiction::parse(" JP"),
            Err(JurisdictionError::NotCanonical { .. })
        ));
    }

    #[test]
    fn malformed_codes_are_refused() {
        assert_eq!(Jurisdiction::parse(""), Err(JurisdictionError::Empty));
        let err = Jurisdiction::parse("Japan").unwrap_err();
        assert!(err.to_string().contains("write \"JP\""), "{err}");
        assert!(matches!(
            Jurisdiction::parse("JPN"),
            Err(JurisdictionError::NotAlpha2 { suggestion: Some(ref s), .. }) if s == "JP"
        ));
        for bad in ["J", "J1", "JPX", "ＪＰ", "J-"] {
            assert!(Jurisdiction::parse(bad).is_err(), "{bad} accepted");
        }
        for placeholder in ["XX", "ZZ", "AA", "QM"] {
            assert!(matches!(
                Jurisdiction::parse(placeholder),
                Err(JurisdictionError::UserAssigned { .. })
            ));
        }
    }

    #[test]
    fn deserialize_validates() {
        // serde's value deserializer stands in for the config file format.
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let ok: StrDeserializer<'_, Error> = "JP".into_deserializer();
        assert_eq!(Jurisdiction::deserialize(ok).unwrap(), Jurisdiction::JP);
        let bad: StrDeserializer<'_, Error> = "jp".into_deserializer();
        let err = Jurisdiction::deserialize(bad).unwrap_err().to_string();
        assert!(err.contains("write \"JP\""), "{err}");
    }
}

//! Connection URLs with their secrets hidden, for errors, logs and reports.
//!
//! Store and Redis URLs may carry a password (`postgres://gw:secret@db/phr`,
//! `redis://:secret@cache:6379`). Three hand-written redactors used to
//! differ: one kept the user name, one hid the whole user-info, and both
//! took any `@` in the path or query for the end of the user-info. This one
//! parses the URL with the `url` crate, so only real user-info counts.

/// `url` with its user-info replaced by `***` and the value of any `password`
/// query parameter by `***`: `redis://:secret@cache:6379` →
/// `redis://***@cache:6379`, `postgres://gw:secret@db/phr` →
/// `postgres://***@db/phr`. The user name is hidden too (it is half of a
/// credential). A URL without secrets is returned exactly as given. Text the
/// `url` crate cannot parse falls back to hiding everything between `://` and
/// the last `@`, so a secret is never shown because the URL is malformed.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_unparsed(url);
    };
    let has_userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    let has_query_password = parsed.query_pairs().any(|(k, _)| is_password_key(&k));
    if !has_userinfo && !has_query_password {
        return url.to_string();
    }
    if has_userinfo && (parsed.set_password(None).is_err() || parsed.set_username("***").is_err()) {
        return redact_unparsed(url);
    }
    if has_query_password {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_password_key(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password")
}

fn redact_unparsed(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    /// `(url, redacted)`.
    const CASES: &[(&str, &str)] = &[
        // The whole user-info is hidden, user name included.
        ("redis://:secret@cache:6379", "redis://***@cache:6379"),
        ("redis://:secret@cache:6379/2", "redis://***@cache:6379/2"),
        ("rediss://gw:secret@cache:6380", "rediss://***@cache:6380"),
        (
            "postgres://gw:secret@127.0.0.1:5432/phr",
            "postgres://***@127.0.0.1:5432/phr",
        ),
        ("mysql://u:secret@127.0.0.1/db", "mysql://***@127.0.0.1/db"),
        ("postgres://gw@db/phr", "postgres://***@db/phr"),
        // An `@` inside the password: the user-info ends at the last one.
        ("redis://:p@ss@cache:6379", "redis://***@cache:6379"),
        // A password query parameter.
        (
            "postgres://db/phr?user=gw&password=secret&sslmode=require",
            "postgres://db/phr?user=gw&password=***&sslmode=require",
        ),
        // Text the url crate refuses: everything between `://` and the last `@`.
        (
            "postgres://gw:secret@/phr?host=/run/postgresql",
            "postgres://***@/phr?host=/run/postgresql",
        ),
    ];

    /// URLs without secrets come back exactly as given.
    const UNCHANGED: &[&str] = &[
        "sqlite://audit.db",
        "sqlite::memory:",
        "sqlite:///var/lib/phr/audit.db?mode=rwc",
        "redis://127.0.0.1:6379",
        "postgres://Db.Example.JP/phr?sslmode=require",
        // An `@` in the query is not user-info (the old redactors hid the host here).
        "postgres://db/phr?application_name=gw@tokyo",
        "not a url",
        "",
    ];

    #[test]
    fn secrets_are_hidden_and_nothing_else_changes() {
        for &(url, want) in CASES {
            assert_eq!(redact_url(url), want, "{url:?}");
        }
        for &url in UNCHANGED {
            assert_eq!(redact_url(url), url);
        }
    }
}

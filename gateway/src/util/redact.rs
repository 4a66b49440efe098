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

    #[test]
    fn user_info_is_hidden_whole() {
        assert_eq!(redact_url("redis://:secret@cache:6379"), "redis://***@cache:6379");
        assert_eq!(redact_url("redis://:secret@cache:6379/2"), "redis://***@cache:6379/2");
        assert_eq!(redact_url("rediss://gw:secret@cache:6380"), "rediss://***@cache:6380");
        assert_eq!(
            redact_url("postgres://gw:secret@127.0.0.1:5432/phr"),
            "postgres://***@127.0.0.1:5432/phr"
        );
        assert_eq!(redact_url("mysql://u:secret@127.0.0.1/db"), "mysql://***@127.0.0.1/db");
        assert_eq!(redact_url("postgres://gw@db/phr"), "postgres://***@db/phr");
        // An `@` inside the password: the user-info ends at the last one.
        assert_eq!(redact_url("redis://:p@ss@cache:6379"), "redis://***@cache:6379");
    }

    #[test]
    fn a_password_query_parameter_is_hidden() {
        let r = redact_url("postgres://db/phr?user=gw&password=secret&sslmode=require");
        assert_eq!(r, "postgres://db/phr?user=gw&password=***&sslmode=require");
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "sqlite://audit.db",
            "sqlite::memory:",
            "sqlite:///var/lib/phr/audit.db?mode=rwc",
            "redis://127.0.0.1:6379",
            "postgres://Db.Example.JP/phr?sslmode=require",
            // An `@` in the query is not user-info (the old redactors hid the host here).
            "postgres://db/phr?application_name=gw@tokyo",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn unparsable_urls_hide_everything_before_the_last_at() {
        let r = redact_url("postgres://gw:secret@/phr?host=/run/postgresql");
        assert!(!r.contains("secret"), "{r}");
        assert!(redact_url("redis://:sec ret@[bad").starts_with("redis://***@"));
    }
}

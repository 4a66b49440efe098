//! Reading the access token from the `Authorization` header (RFC 6750 §2.1,
//! RFC 9449 §7.1). Exactly one header is accepted: two could be read
//! differently by the gateway and a backend.

use http::header::AUTHORIZATION;

use super::error::AuthError;

/// Which scheme carried the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer`: plain or certificate-bound token.
    Bearer,
    /// `DPoP`: DPoP-bound token, a `DPoP` proof header must accompany it.
    Dpop,
}

/// The token from the single `Authorization` header (`Bearer` or `DPoP`).
pub fn bearer_token(headers: &http::HeaderMap) -> Result<(Scheme, &str), AuthError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let v = all.next().ok_or(AuthError::MissingToken)?;
    if all.next().is_some() {
        return Err(AuthError::MalformedAuthorization("more than one Authorization header"));
    }
    let s = v
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization("Authorization is not ASCII"))?;
    let (scheme, tok) = s.split_once(' ').unwrap_or((s, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        // Basic etc.: no access token here; answer with the Bearer challenge.
        return Err(AuthError::MissingToken);
    };
    let tok = tok.trim();
    if tok.is_empty() || tok.contains(' ') {
        return Err(AuthError::MalformedAuthorization("expected `Bearer <token>`"));
    }
    Ok((scheme, tok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn bearer_and_dpop_schemes_are_parsed_and_others_refused() {
        assert_eq!(bearer_token(&h("Bearer a.b.c")), Ok((Scheme::Bearer, "a.b.c")));
        assert_eq!(bearer_token(&h("bearer  a.b.c ")), Ok((Scheme::Bearer, "a.b.c")));
        assert_eq!(bearer_token(&h("DPoP a.b.c")), Ok((Scheme::Dpop, "a.b.c")));
        assert_eq!(bearer_token(&h("Basic dXNlcjpwdw==")), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(&h("Bearer")).unwrap_err().code(),
            "malformed_authorization"
        );
        assert_eq!(
            bearer_token(&h("Bearer a b")).unwrap_err().code(),
            "malformed_authorization"
        );
        assert_eq!(bearer_token(&HeaderMap::new()), Err(AuthError::MissingToken));
    }
}

//! An upstream endpoint URL as the configuration states it: `https://host:port` (or plain
//! `http://` to loopback). Parsed here, where the file is checked, so the checks and the
//! proxy that dials the endpoint read the URL the same way.

/// Why an endpoint URL is not usable.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL does not parse.
    #[error("{0}")]
    Uri(#[from] http::uri::InvalidUri),
    /// The scheme is neither `https` nor `http`.
    #[error("the scheme must be https:// (or http:// for loopback)")]
    Scheme,
    /// The URL names no host.
    #[error("no host")]
    NoHost,
    /// The URL carries credentials.
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// The URL has a path or query.
    #[error("an endpoint has no path or query; put path rewriting in the route")]
    PathOrQuery,
}

/// A parsed endpoint URL: a scheme, a host and a port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// `https` (true) or plain `http`.
    pub tls: bool,
    /// The host name or address, without IPv6 brackets.
    pub host: String,
    /// The port (default 443 for https, 80 for http).
    pub port: u16,
    /// `scheme://host:port`, reported in access records as the upstream.
    pub base: String,
    /// `host:port` as configured: the `Host` header unless the route preserves the client's.
    pub authority: String,
}

impl EndpointUrl {
    /// Parses an endpoint URL: only a scheme, a host and an optional port; no path, query
    /// or credentials, because those would be silently dropped when forwarding.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let uri: http::Uri = url.parse()?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(EndpointError::Scheme),
        };
        let authority = uri.authority().ok_or(EndpointError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(EndpointError::Credentials);
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(EndpointError::PathOrQuery);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base = format!("{}://{}", if tls { "https" } else { "http" }, authority.as_str());
        Ok(Self {
            tls,
            host,
            port,
            base,
            authority: authority.as_str().to_string(),
        })
    }

    /// True for 127.0.0.0/8, ::1 and `localhost`: the only places plain HTTP may go.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

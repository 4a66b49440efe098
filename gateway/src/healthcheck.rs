//! `phr-gateway health --url URL`: asks a running gateway's admin listener whether it is
//! healthy, and exits 0 only on a 200.
//!
//! Why a subcommand: the container image is distroless (no shell, no curl), so its
//! `HEALTHCHECK` and any orchestrator `exec` probe need a client inside the binary.
//! The admin listener is plain HTTP on a loopback or management address (EX-SEG-2), so
//! this client speaks plain HTTP and nothing else.

use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Why the check failed; printed, then the command exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The URL is not an absolute `http://host:port/path` URL.
    #[error("{0:?} is not an http:// URL of the admin listener, e.g. http://127.0.0.1:9901/healthz")]
    BadUrl(String),
    /// No answer: nothing listens there, or it did not answer in time.
    #[error("{url}: no answer ({reason}); is the gateway running and admin.bind this address?")]
    NoAnswer {
        /// The URL asked.
        url: String,
        /// The connection or timeout error.
        reason: String,
    },
    /// The gateway answered, but not 200 (for `/readyz`: not ready, and why).
    #[error("{url}: {status} {body}")]
    Unhealthy {
        /// The URL asked.
        url: String,
        /// The status it answered.
        status: StatusCode,
        /// The first line of its body (the admin listener's reason).
        body: String,
    },
}

/// GETs `url` (within `timeout`) and returns the first line of the body when the status
/// is 200.
pub async fn check(url: &str, timeout: Duration) -> Result<String, HealthError> {
    let uri: Uri = url.parse().map_err(|_| HealthError::BadUrl(url.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(HealthError::BadUrl(url.to_string()));
    }
    let no_answer = |reason: String| HealthError::NoAnswer {
        url: url.to_string(),
        reason,
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let request = Request::get(uri)
        .body(Empty::new())
        .map_err(|_| HealthError::BadUrl(url.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| no_answer(with_causes(&e)))?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| no_answer(e.to_string()))?
            .to_bytes();
        Ok::<_, HealthError>((status, first_line(&body)))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| no_answer(format!("timed out after {}", humantime::format_duration(timeout))))??;
    match status {
        StatusCode::OK => Ok(body),
        status => Err(HealthError::Unhealthy {
            url: url.to_string(),
            status,
            body,
        }),
    }
}

/// `e` and its causes, so "client error (Connect)" says what refused the connection.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The first line of `body`, at most 200 characters, lossily decoded.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines().next().unwrap_or("").chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_urls_that_are_not_plain_http() {
        for url in [
            "https://127.0.0.1:9901/healthz",
            "127.0.0.1:9901",
            "/healthz",
            "not a url",
        ] {
            let e = check(url, Duration::from_secs(1)).await.unwrap_err();
            assert!(matches!(e, HealthError::BadUrl(_)), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_no_answer() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = check(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, HealthError::NoAnswer { .. }), "{e}");
    }

    #[test]
    fn first_line_is_bounded() {
        assert_eq!(first_line(b"not ready: store\nmore"), "not ready: store");
        assert_eq!(first_line(&[b'x'; 500]).len(), 200);
        assert_eq!(first_line(b""), "");
    }
}

//! Reading a body whole, within a limit: the one way the gateway buffers a request body
//! (for the FHIR adapter, the upload filter, the small-body pre-read) or an upstream's
//! response (for the compartment check).

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit it was read under.
    #[error("length limit exceeded")]
    TooLarge,
    /// The body broke off or was framed badly (the sender's fault, not the reader's).
    #[error("{0}")]
    Unreadable(String),
}

/// Reads `body` into memory, refusing it once it passes `limit` bytes.
pub async fn collect_limited<B>(body: B, limit: u64) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        // The limit may be found by this reader or by a `Limited` the body already had.
        Err(e) if is_length_limit(e.as_ref()) => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Unreadable(e.to_string())),
    }
}

/// Whether `e` (or an error it wraps) is a length limit's refusal.
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<LengthLimitError>().is_some() {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn refuses_a_body_over_the_limit_and_reads_one_within_it() {
        let body = || Full::new(Bytes::from_static(b"12345"));
        assert_eq!(collect_limited(body(), 5).await.unwrap(), "12345");
        assert!(matches!(collect_limited(body(), 4).await, Err(BodyError::TooLarge)));
        // An inner limit is reported the same way as the reader's own.
        let inner = Limited::new(body(), 2);
        assert!(matches!(collect_limited(inner, 100).await, Err(BodyError::TooLarge)));
    }
}

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

/// [`collect_limited`] into one `Vec` that the caller may then edit in place (the FHIR
/// response check splices its rewrites into it). Sized up front from the body's length
/// when it is known, so a 20 MiB response is never held twice while it is read, with an
/// eighth more room so that edits which lengthen it (a public base URL longer than the
/// backend's) need no second buffer either; room that is never written costs address
/// space, not memory.
pub async fn collect_limited_vec<B>(body: B, limit: u64) -> Result<Vec<u8>, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let expected = body.size_hint().lower().min(limit);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(usize::try_from(expected + expected / 8).unwrap_or(0));
    let mut body = std::pin::pin!(Limited::new(body, limit));
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Err(e) if is_length_limit(e.as_ref()) => return Err(BodyError::TooLarge),
            Err(e) => return Err(BodyError::Unreadable(e.to_string())),
        }
    }
    Ok(out)
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

    #[tokio::test]
    async fn the_vec_reader_keeps_every_frame_and_the_same_limit() {
        use futures_util::stream;
        use http_body_util::StreamBody;
        let frames = || {
            let chunks = ["ab", "", "cde"].map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(c))));
            StreamBody::new(stream::iter(chunks))
        };
        assert_eq!(collect_limited_vec(frames(), 5).await.unwrap(), b"abcde");
        assert!(matches!(
            collect_limited_vec(frames(), 4).await,
            Err(BodyError::TooLarge)
        ));
        let inner = Limited::new(Full::new(Bytes::from_static(b"12345")), 2);
        assert!(matches!(
            collect_limited_vec(inner, 100).await,
            Err(BodyError::TooLarge)
        ));
    }
}

//! WebSocket passthrough: online-consultation signalling runs over WebSocket, so an
//! upgrade that the route allows is forwarded, and once both sides have switched
//! protocols the two upgraded connections are spliced together.

use http::{header, HeaderMap, Response};
use hyper_util::rt::TokioIo;

/// True for an HTTP/1.1 `Upgrade: websocket` request.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    upgrade && connection
}

/// After the upstream answered 101, waits for both upgrades and copies bytes both ways
/// until either side closes. Runs in its own task; errors only end the tunnel.
/// `client_upgrade` is taken from the client's request before it is forwarded.
pub fn splice(client_upgrade: hyper::upgrade::OnUpgrade, upstream_resp: &mut Response<hyper::body::Incoming>) {
    let upstream_upgrade = hyper::upgrade::on(upstream_resp);
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) else {
            tracing::debug!("websocket upgrade did not complete on both sides");
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
}

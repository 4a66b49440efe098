//! Starting and stopping the gateway: `phr-gateway run` and `phr-gateway demo` both end
//! here, so the demo exercises exactly the production start-up path.

use crate::audit::startup::{check_kek, open_store, start_writer};
use crate::audit::store_sync::{spawn_sync, StoreBlocks};
use crate::runtime::{ActiveConfig, GatewayState};
use crate::server::Server;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use crate::startup::StartError;

/// Builds everything, binds every socket, then serves until SIGTERM/SIGINT and drains.
/// `on_ready` is told the bound addresses (the demo prints its instructions with them).
pub async fn run(
    config_path: &Path,
    on_ready: impl FnOnce(&[(String, SocketAddr)], SocketAddr),
) -> Result<(), StartError> {
    let metrics = crate::metrics::install();
    // Every check that needs neither the network nor a new file, the same ones
    // `check-config` runs: nothing (a key file, the SQLite store) is created for a
    // configuration that could not start, or could only refuse.
    let crate::startup::Checked { config, storage } = crate::startup::check(config_path).await?;
    // The store and the access-record writer first: no request is served unrecorded.
    let store = open_store(&config)?;
    // A key-encryption key that cannot open the store's keys would spool every record forever.
    check_kek(&config, &store).await?;
    let audit = start_writer(&config)?;
    let revocations = Arc::new(crate::auth::MemoryRevocations::new());
    let store_blocks = Arc::new(StoreBlocks::new(store.clone()));
    spawn_sync(store.clone(), revocations.clone(), store_blocks.clone());
    let blocks: Arc<dyn crate::limits::subject_blocks::BlockStore> = store_blocks;
    let runtime = ActiveConfig::build(config, &storage, revocations.clone(), blocks.clone())?;
    // Keys are loaded before any socket is bound: a gateway that reports ready can verify tokens.
    runtime.start().await?;
    let limits = runtime.config.limits.clone();

    let mut bound = Vec::new();
    for l in &runtime.config.listeners {
        let tcp = TcpListener::bind(l.bind).await.map_err(|source| StartError::Bind {
            what: format!("listener {:?}", l.name),
            addr: l.bind,
            source,
        })?;
        bound.push((l.name.clone(), tcp));
    }
    let admin_bind = runtime.config.admin.bind;
    let admin = TcpListener::bind(admin_bind).await.map_err(|source| StartError::Bind {
        what: "the admin listener".into(),
        addr: admin_bind,
        source,
    })?;

    let shared = GatewayState::new(runtime, config_path.to_path_buf(), revocations, blocks, audit);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = Server {
        shared: shared.clone(),
        connections: Arc::new(Semaphore::new(limits.max_connections)),
        max_connections: limits.max_connections,
        shutdown: shutdown_rx.clone(),
    };
    let mut addrs = Vec::new();
    for (name, tcp) in bound {
        let addr = tcp.local_addr().expect("a bound socket has an address");
        tracing::info!(listener = %name, %addr, "listener ready");
        addrs.push((name.clone(), addr));
        tokio::spawn(server.clone().accept_loop(Arc::from(name.as_str()), tcp));
    }
    let admin_addr = admin.local_addr().expect("a bound socket has an address");
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!(addr = %admin_addr, "admin listener ready");
    tokio::spawn(crate::admin::serve(admin, shared.clone(), shutdown_rx.clone()));
    crate::metrics::spawn_upkeep(metrics, crate::metrics::UPKEEP_EVERY);
    on_ready(&addrs, admin_addr);

    wait_for_signals(&shared).await;
    tracing::info!(
        drain_timeout_s = limits.drain_timeout.as_secs(),
        "shutting down: no new connections, draining requests in flight"
    );
    shared.draining.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    let all = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.drain_timeout, server.connections.acquire_many(all)).await {
        Ok(_) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!("drain deadline passed with connections still open; exiting"),
    }
    if let Some(audit) = &shared.audit {
        // Flush what is queued and write a final signed checkpoint.
        if let Err(e) = audit.shutdown().await {
            tracing::error!(error = %e, "access-record writer did not shut down cleanly; the spool holds the rest");
        }
    }
    Ok(())
}

/// SIGHUP reloads; SIGTERM or SIGINT returns (to drain).
async fn wait_for_signals(shared: &GatewayState) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; running until killed");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = shared.reload().await; }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}

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
    let signals = Signals::install();
    // Every check that needs neither the network nor a new file, the same ones
    // `check-config` runs: nothing (a key file, the SQLite store) is created for a
    // configuration that could not start, or could only refuse.
    let crate::startup::Checked { config, storage } = crate::startup::check(config_path).await?;
    // An upgrade: the running gateway's listening sockets, queued connections included.
    // Before the store and the access-record writer: a process that would write the
    // running one's chain or spool is refused before it touches either.
    let handover = config.gateway.handover_socket.clone();
    let mut taken = match &handover {
        Some(path) => {
            let (path, id, spool) = (
                path.clone(),
                config.gateway.instance_id.clone(),
                config.audit.spool_file.clone(),
            );
            tokio::task::spawn_blocking(move || crate::handover::take_over(&path, &id, &spool))
                .await
                .map_err(|e| crate::handover::HandoverError::Io {
                    path: handover.clone().unwrap_or_default(),
                    step: "taking over",
                    source: std::io::Error::other(e.to_string()),
                })??
        }
        None => None,
    };
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
        let inherited = taken.as_mut().and_then(|t| t.listener(&l.name, l.bind));
        let tcp = listen(inherited, l.bind, || format!("listener {:?}", l.name)).await?;
        bound.push((l.name.clone(), tcp));
    }
    let admin_bind = runtime.config.admin.bind;
    let inherited = taken.as_mut().and_then(|t| t.admin(admin_bind));
    let admin = listen(inherited, admin_bind, || "the admin listener".into()).await?;
    let offering = handover.as_ref().map(|_| crate::handover::Offering {
        listeners: bound
            .iter()
            .filter_map(|(n, l)| Some((n.clone(), duplicate(l)?)))
            .collect(),
        admin: duplicate(&admin),
        instance_id: runtime.config.gateway.instance_id.clone(),
        spool_file: runtime.config.audit.spool_file.clone(),
    });

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
    if let Some(taken) = taken {
        // The old process stops accepting and drains once told; its sockets are ours.
        match tokio::task::spawn_blocking(move || taken.confirm()).await {
            Ok(Ok(())) => tracing::info!("took the listening sockets over; the previous process drains"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the previous process did not acknowledge the hand-over"),
            Err(e) => tracing::warn!(error = %e, "the hand-over confirmation failed"),
        }
    }
    let handed_over = offer_sockets(handover.as_deref(), offering)?;

    let taken_over = tokio::select! {
        _ = Signals::wait(signals, &shared) => false,
        _ = handed_over => true,
    };
    if taken_over {
        tracing::info!("a new process took the listening sockets over");
    } else if let Some(path) = &handover {
        // Nobody else will use it: the next start need not find a stale file.
        let _ = std::fs::remove_file(path);
    }
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

/// `inherited` (from a hand-over) as a tokio listener, else a new socket bound to `addr`.
async fn listen(
    inherited: Option<std::net::TcpListener>,
    addr: SocketAddr,
    what: impl Fn() -> String,
) -> Result<TcpListener, StartError> {
    let bind_error = |source| StartError::Bind {
        what: what(),
        addr,
        source,
    };
    match inherited {
        Some(socket) => {
            socket.set_nonblocking(true).map_err(bind_error)?;
            TcpListener::from_std(socket).map_err(bind_error)
        }
        None => TcpListener::bind(addr).await.map_err(bind_error),
    }
}

/// A second descriptor of `listener`'s socket, to hand over while this process serves.
fn duplicate(listener: &TcpListener) -> Option<std::net::TcpListener> {
    use std::os::fd::AsFd;
    match listener.as_fd().try_clone_to_owned() {
        Ok(fd) => Some(std::net::TcpListener::from(fd)),
        Err(e) => {
            tracing::error!(error = %e, "cannot duplicate a listening socket; it will not be handed over");
            None
        }
    }
}

/// Offers the sockets on `path` (when configured); the returned future completes when a
/// new process has taken them over. A socket path that cannot be bound is a start-up
/// error, so an operator never finds out at upgrade time.
fn offer_sockets(
    path: Option<&Path>,
    offering: Option<crate::handover::Offering>,
) -> Result<impl std::future::Future<Output = ()>, StartError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    if let (Some(path), Some(offering)) = (path, offering) {
        let listener = crate::handover::bind(path)?;
        let path = path.to_path_buf();
        // A plain thread, not a runtime blocking task: it waits in accept() for as long
        // as the process serves, and the runtime must not wait for it when it shuts down.
        let offered = std::thread::Builder::new().name("handover".into()).spawn(move || {
            match crate::handover::offer(listener, &path, offering) {
                Ok(()) => {
                    let _ = done_tx.send(());
                }
                Err(e) => {
                    tracing::error!(error = %e, "hand-over socket failed; upgrades must restart");
                    // Keep `done_tx` alive: no hand-over, serve until a signal.
                    std::mem::forget(done_tx);
                }
            }
        });
        if let Err(e) = offered {
            tracing::error!(error = %e, "cannot start the hand-over thread; upgrades must restart");
        }
    } else {
        std::mem::forget(done_tx);
    }
    Ok(async move {
        let _ = done_rx.await;
    })
}

/// The process's signals, taken over from their default actions.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installed before the gateway says it is ready: a SIGTERM that arrives right after
    /// "listener ready" must drain, not kill the process with the signal's default action.
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(hup), Ok(term), Ok(int)) => Some(Signals { hup, term, int }),
            _ => {
                tracing::error!("cannot install signal handlers; running until killed");
                None
            }
        }
    }

    /// SIGHUP reloads; SIGTERM or SIGINT returns (to drain).
    async fn wait(signals: Option<Signals>, shared: &GatewayState) {
        let Some(mut s) = signals else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = s.hup.recv() => { let _ = shared.reload().await; }
                _ = s.term.recv() => return,
                _ = s.int.recv() => return,
            }
        }
    }
}

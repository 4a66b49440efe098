//! The access-record service as the running gateway uses it: the store, the keys and the
//! group-commit writer opened at start-up, and one [`AccessRecord`] built per request from
//! what the pipeline learned (LOG-ACC-1). Also the once-a-second sync of revocations and
//! the subject block list from the store, so every instance sharing a PostgreSQL store
//! enforces a revocation within two seconds (ACL-ACCT-1).

use super::chain::CheckpointSigner;
use super::crypto::{KeyEncryptionKey, LocalKek};
use super::keys::IndexKey;
use super::record::{scrub_path, AccessRecord, Decision};
use super::writer::{AuditHandle, AuditWriter, DurabilityMode, WriterConfig};
use super::AuditError;
use crate::auth::MemoryRevocations;
use crate::config::{AuditMode, Config};
use crate::limits::subject_blocks::{BlockReason, BlockStore, MemoryBlockStore};
use crate::pipeline::RequestContext;
use crate::store::{Store, StoreOptions};
use std::sync::Arc;
use std::time::Duration;

/// Opens the store (lazily: the writer spools while it is down).
pub fn open_store(config: &Config) -> Result<Store, String> {
    open_store_with(config, StoreOptions::default())
}

fn open_store_with(config: &Config, mut options: StoreOptions) -> Result<Store, String> {
    // Every new PostgreSQL connection is checked against the residency policy too.
    options.server_address_check = crate::residency::cli::store_address_check(config)?;
    let url = config
        .store
        .url
        .as_deref()
        .unwrap_or("sqlite://phr-gateway.db?mode=rwc");
    Store::connect_lazy(url, options).map_err(|e| format!("store {}: {e}", crate::util::redact::redact_url(url)))
}

/// The key-encryption key: from the environment, the key file, or a new key file.
pub fn load_kek(config: &Config, create: bool) -> Result<Arc<dyn KeyEncryptionKey>, String> {
    let a = &config.audit;
    let kek = match &a.kek_env {
        Some(var) => LocalKek::from_env(var).map_err(|e| format!("audit.kek_env {var}: {e}"))?,
        None if a.kek_file.exists() => LocalKek::from_file(&a.kek_file).map_err(|e| e.to_string())?,
        None if create => {
            tracing::warn!(file = %a.kek_file.display(), "no audit key-encryption key: created a new one; back it up, records cannot be read without it");
            LocalKek::generate_file(&a.kek_file).map_err(|e| e.to_string())?
        }
        None => return Err(format!("{}: no audit key-encryption key", a.kek_file.display())),
    };
    Ok(Arc::new(kek))
}

pub fn load_signer(config: &Config) -> Result<Arc<CheckpointSigner>, String> {
    CheckpointSigner::load_or_generate(&config.audit.signing_key_file)
        .map(Arc::new)
        .map_err(|e| format!("{}: {e}", config.audit.signing_key_file.display()))
}

/// Start-up check (DATA-ENC-1, and "a bad config never starts a
/// half-working gateway"): when the store already holds the index secret,
/// this gateway's key-encryption key must unwrap it. A gateway with another
/// instance's KEK, or a replaced KEK file, would otherwise serve while every
/// commit failed and every record went to the spool, never to the store.
/// A store that cannot be reached now is not an error here: records are
/// spooled until it returns, as the writer documents.
pub async fn check_kek(config: &Config, store: &Store) -> Result<(), String> {
    if !config.audit.enabled {
        return Ok(());
    }
    let kek = load_kek(config, true)?;
    match IndexKey::check_kek(store, kek.as_ref()).await {
        Ok(_) => Ok(()),
        Err(e @ AuditError::ForeignKek { .. }) => Err(e.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the audit key-encryption key against the store now; records are spooled until the store is reachable");
            Ok(())
        }
    }
}

/// Starts the writer; `None` when `audit.enabled = false`.
pub fn start_writer(config: &Config) -> Result<Option<AuditHandle>, String> {
    if !config.audit.enabled {
        tracing::warn!("access records are DISABLED (audit.enabled = false); never run medical traffic like this");
        return Ok(None);
    }
    let kek = load_kek(config, true)?;
    let signer = load_signer(config)?;
    let mut wc = WriterConfig::new(config.gateway.instance_id.clone(), config.audit.spool_file.clone());
    wc.checkpoint_every = config.audit.checkpoint_every;
    wc.checkpoint_interval = config.audit.checkpoint_interval;
    wc.checkpoint_file = config.audit.checkpoint_file.clone();
    wc.mode = match config.audit.mode {
        AuditMode::Durable => DurabilityMode::Durable,
        AuditMode::Relaxed => DurabilityMode::Relaxed,
    };
    // The writer gets a connection of its own (same database as the shared
    // store): a pool would hand each commit a different connection, and SQLite
    // then re-reads the pages another connection's commit made stale.
    let writer_store = open_store_with(
        config,
        StoreOptions {
            max_connections: 1,
            ..StoreOptions::default()
        },
    )?;
    let (handle, _task) = AuditWriter::start(writer_store, kek, signer, wc).map_err(|e| e.to_string())?;
    Ok(Some(handle))
}

/// The request's facts as an access record. Never bodies, tokens or query values.
pub fn record_for(
    ctx: &RequestContext,
    meta: &RequestMeta,
    status: u16,
    reason: Option<&str>,
    bytes_out: u64,
) -> AccessRecord {
    let id = ctx.identity.as_ref();
    let fhir = ctx.fhir.as_ref();
    AccessRecord {
        time: super::time::now_ms(),
        clock_synchronized: None,
        request_id: ctx.id.to_str().unwrap_or_default().to_string(),
        instance: meta.instance.clone(),
        source_ip: ctx.client_ip.to_string(),
        tls_version: Some(ctx.conn.tls_version.to_string()),
        client_cert_fingerprint: ctx.conn.client.as_ref().map(|c| c.fingerprint_hex()),
        client_cert_subject: ctx.conn.client.as_ref().map(|c| c.subject.clone()),
        token_issuer: id.map(|i| i.issuer.clone()),
        subject: id.map(|i| i.subject.clone()),
        client_id: id.and_then(|i| i.client_id.clone()),
        jti: id.and_then(|i| i.jti.clone()),
        auth_factors: id.map(|i| i.amr.clone()).unwrap_or_default(),
        session_start: id.and_then(|i| i.auth_time),
        patients: fhir.map(|f| f.patients.iter().cloned().collect()).unwrap_or_default(),
        interaction: fhir.map(|f| f.interaction.to_string()),
        resource_type: fhir.and_then(|f| f.resource_type.map(str::to_string)),
        resource_id: fhir.and_then(|f| f.resource_id.clone()),
        method: meta.method.clone(),
        route: ctx.route.as_ref().map(|r| r.name.to_string()).unwrap_or_default(),
        path: scrub_path(&meta.path),
        status,
        decision: if reason.is_none() && status < 400 {
            Decision::Allowed
        } else {
            Decision::Refused
        },
        reason: reason.map(str::to_string),
        bytes_in: meta.bytes_in,
        bytes_out,
        latency_ms: ctx.started.elapsed().as_millis() as u64,
        upstream: ctx.route.as_ref().map(|r| r.upstream.name.to_string()),
        upstream_addr: ctx.upstream_addr.map(|a| a.to_string()),
    }
}

/// What the record needs from the request before the pipeline consumes it.
pub struct RequestMeta {
    pub instance: String,
    pub method: String,
    pub path: String,
    pub bytes_in: u64,
}

/// The block list: in memory for the request path, written through to the store, and
/// refreshed from it (an operator's `subjects unblock` reaches every instance).
pub struct StoreBlocks {
    memory: MemoryBlockStore,
    store: Store,
}

impl StoreBlocks {
    pub fn new(store: Store) -> Self {
        Self {
            memory: MemoryBlockStore::new(),
            store,
        }
    }
}

impl BlockStore for StoreBlocks {
    fn block(&self, subject: &str, reason: &BlockReason) {
        self.memory.block(subject, reason);
        let (store, subject, reason) = (self.store.clone(), subject.to_string(), reason.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.block_subject(&subject, &reason).await {
                tracing::error!(error = %e, "cannot persist a subject block; it holds in this instance only");
            }
        });
    }
    fn unblock(&self, subject: &str) -> bool {
        let (store, s) = (self.store.clone(), subject.to_string());
        tokio::spawn(async move {
            let _ = store.unblock_subject(&s).await;
        });
        self.memory.unblock(subject)
    }
    fn is_blocked(&self, subject: &str) -> bool {
        self.memory.is_blocked(subject)
    }
}

/// Copies revocations and blocks from the store into memory every second. A failed
/// read keeps the last good lists (and says so): revocations never silently vanish.
pub fn spawn_sync(store: Store, revocations: Arc<MemoryRevocations>, blocks: Arc<StoreBlocks>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.list_revocations().await {
                Ok(snap) => revocations.replace(
                    snap.jtis,
                    snap.subjects
                        .into_iter()
                        .map(|((iss, sub), t)| (iss, sub, t.max(0) as u64)),
                ),
                Err(e) => tracing::warn!(error = %e, "cannot read revocations from the store; keeping the last list"),
            }
            match store.list_blocked().await {
                Ok(list) => {
                    let wanted: std::collections::HashSet<String> = list.iter().map(|b| b.subject.clone()).collect();
                    for b in &list {
                        if !blocks.memory.is_blocked(&b.subject) {
                            blocks
                                .memory
                                .block(&b.subject, &BlockReason::Operator { note: b.reason.clone() });
                        }
                    }
                    for s in blocks.memory.subjects() {
                        if !wanted.contains(&s) {
                            blocks.memory.unblock(&s);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the block list from the store; keeping the last list")
                }
            }
        }
    });
}

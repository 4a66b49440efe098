//! The audit writer: group commit, spool fallback, checkpoints
//! (LOG-ACC-1, LOG-PROT-1, DATA-ENC-1).
//!
//! LOG-ACC-1 is only met if every served request is recorded. In the default
//! [`DurabilityMode::Durable`] mode [`AuditHandle::record`] returns only once
//! the record is committed to the database or fsync'd to the local spool;
//! if neither is possible it returns an error and the gateway answers 503
//! instead of serving an unrecorded request. To keep that affordable, one
//! writer task batches whatever is queued, plus the records of requests
//! already in the pipeline ([`AuditHandle::announce`], waiting at most
//! `linger`), into one statement: one commit and fsync per batch, not per
//! request.
//! The writer alone assigns sequence numbers and chain hashes, so each
//! instance's chain is strictly ordered.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::super::store::Store;
use super::chain::CheckpointSigner;
use super::crypto::KeyEncryptionKey;
use super::group_commit::Writer;
use super::record::AccessRecord;
use super::spool::Spool;
use super::AuditError;

/// When `record` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurabilityMode {
    /// After commit or spool fsync (the default, and the one LOG-ACC-1 needs).
    #[default]
    Durable,
    /// At once; a full queue drops the record and counts it in
    /// [`WriterStats::dropped`]. For load tests only, never the default.
    Relaxed,
}

/// Writer tuning; [`WriterConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// This instance's chain name; must be unique among running gateways.
    pub instance: String,
    /// Spool file (mode 0600) used while the database is unreachable.
    pub spool_path: std::path::PathBuf,
    /// Durable (default) or relaxed.
    pub mode: DurabilityMode,
    /// Queue between request tasks and the writer.
    pub queue_capacity: usize,
    /// Most records in one transaction.
    pub max_batch: usize,
    /// Longest wait for more records after the first one of a batch. The
    /// writer waits only while requests that announced a record
    /// ([`AuditHandle::announce`]) have not submitted it yet; zero commits
    /// whatever is queued at once.
    pub linger: Duration,
    /// Signed checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this much time, whichever comes first. Together they bound the tail a
    /// crash leaves without a checkpoint (LOG-PROT-1): records there could be deleted
    /// without trace, so both are small by default; `audit verify` enforces the bound.
    pub checkpoint_interval: Duration,
    /// Also append every checkpoint to this file (see [`super::checkpoint_log`]).
    pub checkpoint_file: Option<std::path::PathBuf>,
    /// New data key after this many records...
    pub data_key_max_records: u64,
    /// ...or this age (so a day's records can be shredded together).
    pub data_key_max_age: Duration,
    /// How often to retry the database while records are spooled.
    pub retry_interval: Duration,
}

impl WriterConfig {
    /// Defaults: durable, batches of up to 512 waiting at most 2 ms for announced records, checkpoint
    /// every 100 records or 1 s, data key per start and per day.
    pub fn new(instance: impl Into<String>, spool_path: impl Into<std::path::PathBuf>) -> WriterConfig {
        WriterConfig {
            instance: instance.into(),
            spool_path: spool_path.into(),
            mode: DurabilityMode::Durable,
            queue_capacity: 8192,
            max_batch: 512,
            linger: Duration::from_millis(2),
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_file: None,
            data_key_max_records: 1_000_000,
            data_key_max_age: Duration::from_secs(24 * 3600),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records committed to the database (directly or by replay).
    pub committed: u64,
    /// Database transactions that committed records.
    pub transactions: u64,
    /// Records written to the spool.
    pub spooled: u64,
    /// Spooled records later committed.
    pub replayed: u64,
    /// Records dropped by a full queue (relaxed mode only).
    pub dropped: u64,
    /// Records that could be neither committed nor spooled.
    pub failed: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// Shared between the handles and the writer task.
#[derive(Default)]
pub(super) struct Counters {
    /// Records committed to the store.
    pub(super) committed: AtomicU64,
    /// Store transactions (one per group commit).
    pub(super) transactions: AtomicU64,
    /// Records written to the local spool while the store was down.
    pub(super) spooled: AtomicU64,
    /// Spooled records later committed.
    pub(super) replayed: AtomicU64,
    /// Records that could not be queued (the writer was gone).
    pub(super) dropped: AtomicU64,
    /// Records that could be neither committed nor spooled.
    pub(super) failed: AtomicU64,
    /// Checkpoints written.
    pub(super) checkpoints: AtomicU64,
    /// Records announced by [`AuditHandle::announce`] and not yet submitted.
    pub(super) expected: AtomicUsize,
}

pub(super) type Ack = oneshot::Sender<Result<(), AuditError>>;

pub(super) enum Msg {
    Record(Box<AccessRecord>, Option<Ack>, Option<Expected>),
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle used by request tasks.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    mode: DurabilityMode,
    counters: Arc<Counters>,
}

/// A request that will submit an access record; see [`AuditHandle::announce`].
/// Dropped by the writer when it takes the record off its queue, or by the
/// request if it ends without one: either way the writer stops waiting for it.
pub struct Expected(Arc<Counters>);

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.expected.fetch_sub(1, Relaxed);
    }
}

impl AuditHandle {
    /// Announces a record to come. The writer's batch waits (at most
    /// `linger`) only while announced records are outstanding, so batches
    /// grow with load (fewer commits, each with its fsync, per record) and a
    /// lone request is committed at once.
    pub fn announce(&self) -> Expected {
        self.counters.expected.fetch_add(1, Relaxed);
        Expected(self.counters.clone())
    }

    /// Records one access. Durable mode: resolves once committed or spooled
    /// (an `Err` means the request must be refused). Relaxed: at once.
    pub async fn record(&self, rec: AccessRecord) -> Result<(), AuditError> {
        self.record_announced(rec, None).await
    }

    /// [`AuditHandle::record`] for a record announced with
    /// [`AuditHandle::announce`]. The announcement travels with the record and
    /// the writer ends it when it takes the record off the queue, so the
    /// writer's count of records still to come is exact.
    pub async fn record_announced(&self, rec: AccessRecord, announced: Option<Expected>) -> Result<(), AuditError> {
        match self.mode {
            DurabilityMode::Relaxed => match self.tx.try_send(Msg::Record(Box::new(rec), None, announced)) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Relaxed);
                    tracing::warn!("audit queue full: access record dropped (relaxed mode)");
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::WriterStopped),
            },
            DurabilityMode::Durable => {
                let (ack, done) = oneshot::channel();
                self.tx
                    .send(Msg::Record(Box::new(rec), Some(ack), announced))
                    .await
                    .map_err(|_| AuditError::WriterStopped)?;
                done.await.map_err(|_| AuditError::WriterStopped)?
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            committed: c.committed.load(Relaxed),
            transactions: c.transactions.load(Relaxed),
            spooled: c.spooled.load(Relaxed),
            replayed: c.replayed.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            failed: c.failed.load(Relaxed),
            checkpoints: c.checkpoints.load(Relaxed),
        }
    }

    /// Flushes everything queued, tries a last replay, writes a shutdown
    /// checkpoint and stops the writer.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Shutdown(tx))
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        rx.await.map_err(|_| AuditError::WriterStopped)
    }
}

/// Starts the writer task.
pub struct AuditWriter;

impl AuditWriter {
    /// Opens the spool (replaying it first thing), creates this start's data
    /// key and spawns the writer. The store may be unreachable: records are
    /// then spooled until it returns.
    pub fn start(
        store: Store,
        kek: Arc<dyn KeyEncryptionKey>,
        signer: Arc<CheckpointSigner>,
        config: WriterConfig,
    ) -> Result<(AuditHandle, JoinHandle<()>), AuditError> {
        if config.instance.is_empty() || config.max_batch == 0 || config.queue_capacity == 0 {
            return Err(AuditError::Config(
                "audit writer needs an instance name, max_batch > 0 and queue_capacity > 0".into(),
            ));
        }
        if config.checkpoint_every == 0 || config.checkpoint_interval.is_zero() {
            return Err(AuditError::Config(
                "audit.checkpoint_every and audit.checkpoint_interval must be above zero (defaults: 100, \"1s\")"
                    .into(),
            ));
        }
        // Checked before serving: a checkpoint file that cannot be written would
        // otherwise only show in the log while checkpoints went unpublished.
        if let Some(path) = &config.checkpoint_file {
            super::checkpoint_log::CheckpointLog::new(path.clone()).check_writable()?;
        }
        let spool = Spool::open(&config.spool_path)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let counters = Arc::new(Counters::default());
        let handle = AuditHandle {
            tx,
            mode: config.mode,
            counters: counters.clone(),
        };
        let w = Writer::new(store, kek, signer, rx, counters, spool, config)?;
        Ok((handle, tokio::spawn(w.run())))
    }
}

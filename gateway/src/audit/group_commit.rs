//! The writer task behind [`super::writer::AuditHandle`] (LOG-ACC-1,
//! LOG-PROT-1, DATA-ENC-1): group commit, chain assignment, spool fallback,
//! replay and checkpoints.
//!
//! One task owns the chain head of its instance, so sequence numbers are
//! assigned without locks. Each loop turn takes the first queued record,
//! drains whatever else is queued (waiting at most `linger`), and commits the
//! batch in one transaction together with a new data key (first use) and a
//! periodic checkpoint (when due). Only then are the waiters acknowledged.
//! A failed commit spools the batch (fsync, then ack); while anything is
//! spooled every new batch goes to the spool too, so order is preserved, and
//! the spool is replayed every `retry_interval`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::super::store::{AuditRow, CheckpointRow, KeyRow, Store};
use super::chain::{link_hash, CheckpointKind, CheckpointSigner, GENESIS_HASH};
use super::checkpoint_log::CheckpointLog;
use super::crypto::{random_nonces, record_aad, record_ids, spool_aad, DataKey, KeyEncryptionKey};
use super::keys::{BatchMacs, IndexKey};
use super::record::AccessRecord;
use super::record_codec;
use super::spool::{Spool, SpoolEntry};
use super::writer::{Ack, Counters, Msg, WriterConfig};
use super::AuditError;

struct CurrentKey {
    key: DataKey,
    wrapped: Vec<u8>,
    created: Instant,
    created_ms: i64,
    records: u64,
    in_db: bool,
}

/// The task state; built by [`super::writer::AuditWriter::start`].
pub struct Writer {
    store: Store,
    kek: Arc<dyn KeyEncryptionKey>,
    signer: Arc<CheckpointSigner>,
    cfg: WriterConfig,
    rx: mpsc::Receiver<Msg>,
    counters: Arc<Counters>,
    spool: Option<Spool>,
    dek: Option<CurrentKey>,
    index: Option<IndexKey>,
    head: Option<(i64, Vec<u8>)>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    last_retry: Instant,
}

type Batch = Vec<(String, Box<AccessRecord>, Option<Ack>)>;

/// The sealed bytes of `rec`: its current encoding (see
/// [`super::record_codec`]) encrypted in place, so no plaintext copy is left.
fn seal(key: &DataKey, nonce: &[u8; 12], aad: &[u8], rec: &AccessRecord) -> Result<Vec<u8>, AuditError> {
    let mut body = record_codec::encode(rec);
    key.seal_in_place(nonce, aad, &mut body)?;
    Ok(std::mem::take(&mut *body))
}

impl Writer {
    pub(super) fn new(
        store: Store,
        kek: Arc<dyn KeyEncryptionKey>,
        signer: Arc<CheckpointSigner>,
        rx: mpsc::Receiver<Msg>,
        counters: Arc<Counters>,
        spool: Spool,
        cfg: WriterConfig,
    ) -> Result<Writer, AuditError> {
        let mut w = Writer {
            store,
            kek,
            signer,
            rx,
            counters,
            spool: Some(spool),
            dek: None,
            index: None,
            head: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            last_retry: Instant::now(),
            cfg,
        };
        w.new_data_key()?;
        Ok(w)
    }

    fn new_data_key(&mut self) -> Result<(), AuditError> {
        let (key, wrapped) = DataKey::generate(self.kek.as_ref())?;
        self.dek = Some(CurrentKey {
            key,
            wrapped,
            created: Instant::now(),
            created_ms: super::time::now_ms(),
            records: 0,
            in_db: false,
        });
        Ok(())
    }

    fn dek(&self) -> &CurrentKey {
        self.dek.as_ref().expect("a data key exists from start on")
    }

    pub(super) async fn run(mut self) {
        if let Err(e) = self.replay().await {
            tracing::warn!(error = %e, "audit spool not replayed at start; will retry");
        }
        // A previous run that ended by kill -9 or a crash left records after its
        // last checkpoint; vouch for them now rather than when traffic resumes
        // (LOG-PROT-1: `audit verify` fails on an old unvouched tail).
        // Probed first: a database that is down at start must not hold the first
        // requests behind a connect timeout.
        if self.spool_is_empty() && self.db_reachable().await {
            if let Err(e) = self.checkpoint(CheckpointKind::Start).await {
                tracing::warn!(error = %e, "start audit checkpoint failed; the next periodic one covers the chain");
            }
        }
        let tick_every = self.cfg.retry_interval.min(self.cfg.checkpoint_interval);
        let mut tick = tokio::time::interval(tick_every);
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(Msg::Record(rec, ack, announced)) => {
                        drop(announced); // received: no longer to come
                        let (batch, stop) = self.collect(rec, ack).await;
                        self.handle(batch).await;
                        if let Some(done) = stop {
                            self.stop(done).await;
                            return;
                        }
                    }
                    Some(Msg::Shutdown(done)) => return self.stop(Some(done)).await,
                    None => return self.stop(None).await,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    /// Gathers the queued records into one batch. Returns `Some` when a
    /// shutdown (or closed channel, as `Some(None)`) was seen meanwhile.
    async fn collect(
        &mut self,
        rec: Box<AccessRecord>,
        ack: Option<Ack>,
    ) -> (Batch, Option<Option<oneshot::Sender<()>>>) {
        let mut batch: Batch = vec![(String::new(), rec, ack)];
        let deadline = tokio::time::Instant::now() + self.cfg.linger;
        // Wait only for the records announced when the batch opened: they come
        // within an upstream response time. Waiting also for requests that
        // arrive later would stretch every commit to `linger` under load.
        let mut awaited = self.counters.expected.load(Relaxed);
        while batch.len() < self.cfg.max_batch {
            let msg = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if awaited == 0 => break,
                Err(mpsc::error::TryRecvError::Empty) if self.counters.expected.load(Relaxed) == 0 => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            awaited = awaited.saturating_sub(1);
            match msg {
                Some(Msg::Record(r, a, announced)) => {
                    drop(announced);
                    batch.push((String::new(), r, a))
                }
                Some(Msg::Shutdown(done)) => return (batch, Some(Some(done))),
                None => return (batch, Some(None)),
            }
        }
        (batch, None)
    }

    async fn handle(&mut self, mut batch: Batch) {
        match record_ids(batch.len(), super::time::now_ms()) {
            Ok(ids) => batch.iter_mut().zip(ids).for_each(|(item, id)| item.0 = id),
            Err(e) => return self.ack_all(batch, Some(e.to_string()), "random"),
        }
        if !self.spool_is_empty() && self.last_retry.elapsed() >= self.cfg.retry_interval && self.db_reachable().await {
            if let Err(e) = self.replay().await {
                tracing::debug!(error = %e, "audit database still unavailable");
            }
        }
        let mut db_error = "records already waiting in the spool".to_string();
        if self.spool_is_empty() {
            let recs: Vec<_> = batch.iter().map(|(id, r, _)| (id.clone(), r.as_ref())).collect();
            match self.commit(&recs).await {
                Ok(()) => return self.ack_all(batch, None, ""),
                Err(e) => {
                    tracing::error!(error = %e, "audit commit failed; spooling");
                    self.head = None; // re-read: the commit's outcome is unknown
                    db_error = e.to_string();
                }
            }
        }
        let entries = batch
            .iter()
            .map(|(id, r, _)| (id.clone(), r.as_ref().clone()))
            .collect();
        match self.spool_records(entries).await {
            Ok(n) => {
                self.counters.spooled.fetch_add(n, Relaxed);
                self.ack_all(batch, None, "");
            }
            Err(e) => {
                tracing::error!(error = %e, "audit spool failed: refusing requests");
                self.ack_all(batch, Some(db_error), &e.to_string());
            }
        }
    }

    /// Answers every request of `batch`: recorded, or (with `db_error`, the database's
    /// failure, and `spool`, the spool's) not recorded.
    fn ack_all(&self, batch: Batch, db_error: Option<String>, spool: &str) {
        if db_error.is_some() {
            self.counters.failed.fetch_add(batch.len() as u64, Relaxed);
        }
        for (_, _, ack) in batch {
            if let Some(ack) = ack {
                let _ = ack.send(match &db_error {
                    None => Ok(()),
                    Some(db) => Err(AuditError::Unrecorded {
                        db: db.clone(),
                        spool: spool.to_string(),
                    }),
                });
            }
        }
    }

    /// A quick probe before replaying: while the database is down, every request's
    /// record goes to the spool at once instead of waiting behind a connect timeout.
    async fn db_reachable(&mut self) -> bool {
        let probe = sqlx::query("SELECT 1").execute(self.store.pool());
        let ok = matches!(
            tokio::time::timeout(std::time::Duration::from_millis(300), probe).await,
            Ok(Ok(_))
        );
        if !ok {
            self.last_retry = Instant::now();
        }
        ok
    }

    fn spool_is_empty(&self) -> bool {
        self.spool.as_ref().is_none_or(|s| s.is_empty())
    }

    /// Runs blocking spool I/O off the async worker threads.
    async fn with_spool<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Spool) -> Result<R, AuditError> + Send + 'static,
    ) -> Result<R, AuditError> {
        let mut spool = self.spool.take().ok_or(AuditError::WriterStopped)?;
        let (spool, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut spool);
            (spool, out)
        })
        .await
        .map_err(|_| AuditError::WriterStopped)?;
        self.spool = Some(spool);
        out
    }

    async fn spool_records(&mut self, recs: Vec<(String, AccessRecord)>) -> Result<u64, AuditError> {
        let dek = self.dek();
        let mut entries = Vec::with_capacity(recs.len() + 1);
        if !self.spool.as_ref().is_some_and(|s| s.has_key(dek.key.id())) {
            entries.push(SpoolEntry::Key {
                key_id: dek.key.id().to_string(),
                kek_id: self.kek.id().to_string(),
                wrapped: dek.wrapped.clone(),
            });
        }
        for ((record_id, rec), nonce) in recs.iter().zip(random_nonces(recs.len())?) {
            let ciphertext = seal(&dek.key, &nonce, &spool_aad(record_id, &self.cfg.instance), rec)?;
            entries.push(SpoolEntry::Record {
                record_id: record_id.clone(),
                key_id: dek.key.id().to_string(),
                nonce: nonce.to_vec(),
                ciphertext,
            });
        }
        let n = recs.len() as u64;
        self.with_spool(move |s| s.append(&entries)).await?;
        Ok(n)
    }

    /// Encrypts, chains and commits records in one transaction.
    pub(super) async fn commit(&mut self, recs: &[(String, &AccessRecord)]) -> Result<(), AuditError> {
        if self.index.is_none() {
            self.index = Some(IndexKey::load_or_create(&self.store, self.kek.as_ref()).await?);
        }
        if self.head.is_none() {
            let head = self.store.audit_chain_head(&self.cfg.instance).await?;
            self.head = Some(head.unwrap_or((0, GENESIS_HASH.to_vec())));
        }
        let dek = self.dek();
        if dek.records >= self.cfg.data_key_max_records || dek.created.elapsed() >= self.cfg.data_key_max_age {
            self.new_data_key()?;
        }
        let (dek, index) = (self.dek(), self.index.as_ref().expect("set above"));
        let (mut seq, mut prev) = self.head.clone().expect("set above");
        let mut rows = Vec::with_capacity(recs.len());
        let mut macs = BatchMacs::new(index);
        for ((record_id, rec), nonce) in recs.iter().zip(random_nonces(recs.len())?) {
            seq += 1;
            let ciphertext = seal(&dek.key, &nonce, &record_aad(record_id, &self.cfg.instance, seq), rec)?;
            let mut row = AuditRow {
                instance: self.cfg.instance.clone(),
                seq,
                record_id: record_id.clone(),
                recorded_ms: rec.time,
                key_id: dek.key.id().to_string(),
                nonce: nonce.to_vec(),
                ciphertext,
                subject_mac: macs.subject_mac(rec.subject.as_deref()),
                patient_macs: macs.patient_macs_column(&rec.patients),
                prev_hash: prev,
                hash: Vec::new(),
            };
            row.hash = link_hash(&row.prev_hash, seq, &row).to_vec();
            prev = row.hash.clone();
            rows.push(row);
        }
        let keys = if dek.in_db {
            vec![]
        } else {
            vec![KeyRow {
                key_id: dek.key.id().to_string(),
                purpose: "data".into(),
                instance: self.cfg.instance.clone(),
                kek_id: self.kek.id().to_string(),
                wrapped: dek.wrapped.clone(),
                created_ms: dek.created_ms,
            }]
        };
        let n = rows.len() as u64;
        let due = self.since_checkpoint + n >= self.cfg.checkpoint_every
            || self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval;
        let checkpoints = match due {
            true => vec![self
                .signer
                .checkpoint(&self.cfg.instance, seq, &prev, CheckpointKind::Periodic, "")?],
            false => vec![],
        };
        self.store.audit_commit(&keys, &rows, &checkpoints).await?;
        self.publish(checkpoints).await;
        self.head = Some((seq, prev));
        let dek = self.dek.as_mut().expect("exists");
        dek.in_db = true;
        dek.records += n;
        self.counters.committed.fetch_add(n, Relaxed);
        self.counters.transactions.fetch_add(1, Relaxed);
        if due {
            self.counters.checkpoints.fetch_add(1, Relaxed);
            self.since_checkpoint = 0;
            self.last_checkpoint = Instant::now();
        } else {
            self.since_checkpoint += n;
        }
        Ok(())
    }

    async fn on_tick(&mut self) {
        if !self.spool_is_empty() {
            if self.last_retry.elapsed() >= self.cfg.retry_interval && self.db_reachable().await {
                if let Err(e) = self.replay().await {
                    tracing::debug!(error = %e, "audit database still unavailable");
                }
            }
        } else if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval {
            if let Err(e) = self.checkpoint(CheckpointKind::Periodic).await {
                tracing::warn!(error = %e, "periodic audit checkpoint failed");
            }
        }
    }

    async fn checkpoint(&mut self, kind: CheckpointKind) -> Result<(), AuditError> {
        let (seq, hash) = match self.head.clone() {
            Some(h) => h,
            None => match self.store.audit_chain_head(&self.cfg.instance).await? {
                Some(h) => h,
                None => return Ok(()), // nothing to vouch for yet
            },
        };
        let c = self.signer.checkpoint(&self.cfg.instance, seq, &hash, kind, "")?;
        self.store.audit_insert_checkpoint(&c).await?;
        self.publish(vec![c]).await;
        self.counters.checkpoints.fetch_add(1, Relaxed);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Appends committed checkpoints to `checkpoint_file`, if configured. A
    /// failure is logged, not retried: the database already holds the
    /// checkpoint, and the next published one vouches for everything before
    /// it, since each covers the whole chain up to its sequence number.
    async fn publish(&self, checkpoints: Vec<CheckpointRow>) {
        let Some(path) = self.cfg.checkpoint_file.clone() else {
            return;
        };
        if checkpoints.is_empty() {
            return;
        }
        let log = CheckpointLog::new(path);
        match tokio::task::spawn_blocking(move || log.append(&checkpoints)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "audit checkpoint not published"),
            Err(e) => tracing::error!(error = %e, "audit checkpoint not published"),
        }
    }

    async fn stop(mut self, done: Option<oneshot::Sender<()>>) {
        // Whatever was queued behind the shutdown request still gets handled.
        while let Ok(Msg::Record(r, a, _)) = self.rx.try_recv() {
            self.handle(vec![(String::new(), r, a)]).await;
        }
        if !self.spool_is_empty() {
            if let Err(e) = self.replay().await {
                tracing::warn!(error = %e, "audit records stay spooled at shutdown");
            }
        }
        if self.spool_is_empty() {
            if let Err(e) = self.checkpoint(CheckpointKind::Shutdown).await {
                tracing::warn!(error = %e, "shutdown audit checkpoint failed");
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Commits spooled records in order, then empties the spool.
    async fn replay(&mut self) -> Result<(), AuditError> {
        self.last_retry = Instant::now();
        if self.spool_is_empty() {
            return Ok(());
        }
        let entries = self.with_spool(|s| s.read_all()).await?;
        let recs = super::replay::open_spooled(entries, self.kek.as_ref(), &self.cfg.instance)?;
        for chunk in recs.chunks(self.cfg.max_batch) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let done = self.store.audit_existing_record_ids(&ids).await?;
            let todo: Vec<(String, &AccessRecord)> = chunk
                .iter()
                .filter(|(id, _)| !done.contains(id))
                .map(|(id, r)| (id.clone(), r))
                .collect();
            if !todo.is_empty() {
                if let Err(e) = self.commit(&todo).await {
                    self.head = None;
                    return Err(e);
                }
                self.counters.replayed.fetch_add(todo.len() as u64, Relaxed);
            }
        }
        self.with_spool(|s| s.clear()).await?;
        tracing::info!(records = recs.len(), "audit spool replayed");
        // Replayed records carry their original (old) times: vouch for them now,
        // not up to a tick later, so `audit verify` never sees them unvouched.
        if !recs.is_empty() {
            if let Err(e) = self.checkpoint(CheckpointKind::Periodic).await {
                tracing::warn!(error = %e, "audit checkpoint after replay failed");
            }
        }
        Ok(())
    }
}

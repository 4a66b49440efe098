//! Checking the chains and checkpoints (LOG-PROT-1, DATA-INT-1, INC-MHLW-1).
//!
//! LOG-PROT-1 asks that improper deletion, tampering and addition of access
//! records be prevented; verification is how an auditor (or the incident
//! evidence bundle of INC-MHLW-1) shows that none happened, or names the
//! first record where one did. For each instance the chain is walked in
//! sequence order from its start (genesis, or the last signed purge
//! checkpoint) with one record of lookahead, so memory stays bounded.
//!
//! How a break is classified (`o(r)` is the position at which row `r`'s own
//! stored hash verifies, trying its current position and its neighbours):
//! * a gap in sequence numbers → [`TamperKind::Deleted`];
//! * a repeated or backwards sequence number → [`TamperKind::Inserted`];
//! * `o(r)` is none and the next row is intact → [`TamperKind::Modified`];
//! * `o(r)` is none or `o(next) = next.seq - 1` (rows shifted up by one) →
//!   [`TamperKind::Inserted`] (the row before the shifted ones);
//! * `o(r) = r.seq + 1` and `o(next) = r.seq` → [`TamperKind::Reordered`];
//!   `o(r) = r.seq + 1` otherwise → rows shifted down: [`TamperKind::Deleted`];
//! * `o(r) = r.seq` but `r` does not link to its predecessor → the
//!   predecessor's hash was recomputed: [`TamperKind::Modified`];
//! * a consistent chain that disagrees with a signed checkpoint, or ends
//!   before one → rewritten ([`TamperKind::Modified`]) or truncated
//!   ([`TamperKind::Deleted`]). Checkpoints published to
//!   `audit.checkpoint_file` ([`super::checkpoint_log`]) count like those in
//!   the database, so deleting records *and* their checkpoints from the
//!   database is caught too.
//!
//! The *unvouched tail* (records after the last checkpoint that matched) is
//! always reported: nothing shows whether records after it were deleted.
//! A running writer keeps it below `checkpoint_every` records, and signs
//! within about two `checkpoint_interval`s of a record's time (the interval,
//! plus up to one tick of its timer), so with a [`TailBound`] a longer tail,
//! or one whose oldest record is older than `2 × interval + grace`, is a
//! [`TamperKind::UnvouchedTail`] finding: the checkpoints after it, and the
//! records they covered, may have been deleted. A live gateway's normal tail
//! is younger and shorter than that and passes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use ed25519_dalek::VerifyingKey;

use super::super::store::{AuditRow, CheckpointRow, Store};
use super::chain::{check_checkpoint_signature, link_hash, GENESIS_HASH};
use super::AuditError;

/// What happened to the first bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperKind {
    /// Content (or its stored hash) changed.
    Modified,
    /// One or more records removed (gap, renumbering, or truncated tail).
    Deleted,
    /// A record added that the writer never wrote.
    Inserted,
    /// Records moved to other positions.
    Reordered,
    /// A checkpoint's signature is wrong or by an untrusted key.
    BadCheckpoint,
    /// Records after the last checkpoint exceed the [`TailBound`]: its
    /// checkpoints (and records after them) may have been deleted.
    UnvouchedTail,
}

/// One problem, naming the first affected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Chain (gateway instance).
    pub instance: String,
    /// What happened.
    pub kind: TamperKind,
    /// Sequence number of the first affected position.
    pub seq: i64,
    /// Id of the affected record, when it still exists.
    pub record_id: Option<String>,
    /// Human-readable explanation.
    pub detail: String,
}

/// Per-chain result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Instance name.
    pub instance: String,
    /// Sequence number after which the chain starts (0, or the last purge).
    pub start_seq: i64,
    /// Last sequence number seen.
    pub last_seq: i64,
    /// Records checked.
    pub records: u64,
    /// Signed checkpoints that matched the chain.
    pub checkpoints_ok: u64,
    /// Last sequence number a matching checkpoint (or the purge start) vouches for.
    pub vouched_seq: i64,
    /// Records after `vouched_seq`: nothing shows whether more followed them.
    pub tail_records: u64,
    /// Earliest `recorded_ms` among those records.
    pub tail_oldest_ms: Option<i64>,
}

/// When the unvouched tail counts as cut (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailBound {
    /// More records than this after the last checkpoint fail (`audit.checkpoint_every`).
    pub max_records: u64,
    /// A tail record older than this fails: `2 × checkpoint_interval + checkpoint_grace`.
    pub max_age_ms: i64,
    /// The verifier's clock, unix ms.
    pub now_ms: i64,
}

/// What [`verify_with`] checks beyond the database's own chains and checkpoints.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Fail on a tail longer or older than this; `None` only reports it.
    pub tail_bound: Option<TailBound>,
    /// Checkpoints read from `audit.checkpoint_file`, with the file's name.
    pub published: Option<(String, Vec<CheckpointRow>)>,
}

/// Result of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// One entry per instance.
    pub chains: Vec<ChainSummary>,
    /// The first problem per instance (later ones are not meaningful).
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// True when every chain and checkpoint checked out.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.chains {
            writeln!(
                f,
                "chain {}: seq {}..={}, {} records, {} checkpoints verified, unvouched tail: {} records after seq {}",
                c.instance,
                c.start_seq + 1,
                c.last_seq,
                c.records,
                c.checkpoints_ok,
                c.tail_records,
                c.vouched_seq
            )?;
        }
        for x in &self.findings {
            let id = x.record_id.as_deref().unwrap_or("-");
            let label = match x.kind {
                TamperKind::UnvouchedTail => "UNVOUCHED",
                _ => "TAMPERED",
            };
            writeln!(
                f,
                "{label} {} seq {} record {}: {:?}: {}",
                x.instance, x.seq, id, x.kind, x.detail
            )?;
        }
        let tampered = self.findings.iter().any(|x| x.kind != TamperKind::UnvouchedTail);
        write!(
            f,
            "{}",
            if self.is_intact() {
                "RESULT: intact"
            } else if tampered {
                "RESULT: TAMPERED"
            } else {
                "RESULT: UNVOUCHED TAIL (records after the last checkpoint may have been deleted)"
            }
        )
    }
}

fn orig_seq(r: &AuditRow) -> Option<i64> {
    [r.seq, r.seq - 1, r.seq + 1]
        .into_iter()
        .find(|&s| link_hash(&r.prev_hash, s, r).as_slice() == r.hash.as_slice())
}

const PAGE: i64 = 2000;

struct Rows<'a> {
    store: &'a Store,
    instance: &'a str,
    buf: VecDeque<AuditRow>,
    after: Option<(i64, String)>,
    done: bool,
}

impl Rows<'_> {
    async fn fill(&mut self) -> Result<(), AuditError> {
        while self.buf.len() < 2 && !self.done {
            let after = self.after.as_ref().map(|(s, id)| (*s, id.as_str()));
            let page = self.store.audit_rows_page(self.instance, after, PAGE).await?;
            self.done = (page.len() as i64) < PAGE;
            if let Some(last) = page.last() {
                self.after = Some((last.seq, last.record_id.clone()));
            }
            self.buf.extend(page);
        }
        Ok(())
    }
}

/// Verifies every chain and checkpoint against the trusted public keys.
/// `Err` only for database failures; tampering is reported in the result.
/// Reports the unvouched tail without judging it; see [`verify_with`].
pub async fn verify(store: &Store, trusted: &[VerifyingKey]) -> Result<VerifyReport, AuditError> {
    verify_with(store, trusted, &VerifyOptions::default()).await
}

/// [`verify`], also judging the unvouched tail and cross-checking published
/// checkpoints as `options` asks.
pub async fn verify_with(
    store: &Store,
    trusted: &[VerifyingKey],
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport::default();
    let mut by_instance: HashMap<String, Vec<CheckpointRow>> = HashMap::new();
    let db = store.audit_checkpoints().await?;
    let in_db: HashSet<(String, Vec<u8>)> = db
        .iter()
        .map(|c| (c.checkpoint_id.clone(), c.signature.clone()))
        .collect();
    let (file, published) = match &options.published {
        Some((file, cps)) => (file.as_str(), cps.as_slice()),
        None => ("", &[][..]),
    };
    // A published checkpoint that the database also holds is checked once;
    // one the database lost is checked on its own, and names the file.
    let published_only: Vec<&CheckpointRow> = published
        .iter()
        .filter(|c| !in_db.contains(&(c.checkpoint_id.clone(), c.signature.clone())))
        .collect();
    let published_ids: HashSet<&str> = published_only.iter().map(|c| c.checkpoint_id.as_str()).collect();
    for (c, from) in db
        .iter()
        .map(|c| (c, ""))
        .chain(published_only.iter().map(|c| (*c, file)))
    {
        if let Err(why) = check_checkpoint_signature(c, trusted) {
            let place = if from.is_empty() {
                String::new()
            } else {
                format!(" published in {from}")
            };
            report.findings.push(Finding {
                instance: c.instance.clone(),
                kind: TamperKind::BadCheckpoint,
                seq: c.seq,
                record_id: None,
                detail: format!("checkpoint {} ({}){place} {why}", c.checkpoint_id, c.kind),
            });
            continue;
        }
        by_instance.entry(c.instance.clone()).or_default().push(c.clone());
    }
    // A chain whose records were all deleted is still checked against its checkpoints.
    let mut instances: Vec<String> = store.audit_instances().await?;
    for i in by_instance.keys() {
        if !instances.contains(i) {
            instances.push(i.clone());
        }
    }
    instances.sort();
    for instance in instances {
        let cps = by_instance.remove(&instance).unwrap_or_default();
        let ctx = ChainCtx {
            cps: &cps,
            published_ids: &published_ids,
            file,
            bound: options.tail_bound,
        };
        let (summary, finding) = verify_chain(store, &instance, &ctx).await?;
        report.chains.push(summary);
        report.findings.extend(finding);
    }
    Ok(report)
}

struct ChainCtx<'a> {
    cps: &'a [CheckpointRow],
    /// Checkpoints found only in the published file.
    published_ids: &'a HashSet<&'a str>,
    file: &'a str,
    bound: Option<TailBound>,
}

impl ChainCtx<'_> {
    /// " published in FILE" for a checkpoint the database no longer holds.
    fn place(&self, c: &CheckpointRow) -> String {
        match self.published_ids.contains(c.checkpoint_id.as_str()) {
            true => format!(" (published in {}, missing from the database)", self.file),
            false => String::new(),
        }
    }
}

/// The tail finding, if the tail is beyond `bound`.
fn judge_tail(instance: &str, sum: &ChainSummary, bound: &TailBound) -> Option<Finding> {
    let since = match sum.vouched_seq {
        0 => "no signed checkpoint covers this chain".to_string(),
        v => format!("the last signed checkpoint that matches is at seq {v}"),
    };
    let fix = format!(
        "Either the checkpoints after it, and records they covered, were deleted (compare with a backup or \
         audit.checkpoint_file), or instance {instance} stopped without a clean shutdown (kill -9, crash) and \
         was not started again: once the tail is confirmed genuine, starting it signs a checkpoint over it"
    );
    let detail = if sum.tail_records > bound.max_records {
        format!(
            "{since}, and {} records follow it: more than audit.checkpoint_every = {}, which a running \
             gateway never leaves unvouched. {fix}",
            sum.tail_records, bound.max_records
        )
    } else {
        let oldest = sum.tail_oldest_ms?;
        let age = bound.now_ms - oldest;
        if age <= bound.max_age_ms {
            return None;
        }
        format!(
            "{since}, and the {} records after it (oldest recorded {} s ago) are older than the bound of {} s \
             (2 x audit.checkpoint_interval + audit.checkpoint_grace) within which a running gateway signs \
             a checkpoint. {fix}",
            sum.tail_records,
            age / 1000,
            bound.max_age_ms / 1000
        )
    };
    Some(Finding {
        instance: instance.to_string(),
        kind: TamperKind::UnvouchedTail,
        seq: sum.vouched_seq + 1,
        record_id: None,
        detail,
    })
}

async fn verify_chain(
    store: &Store,
    instance: &str,
    ctx: &ChainCtx<'_>,
) -> Result<(ChainSummary, Option<Finding>), AuditError> {
    let cps = ctx.cps;
    let start = cps.iter().filter(|c| c.kind == "purge").max_by_key(|c| c.seq);
    let (start_seq, start_hash) = start.map_or((0, GENESIS_HASH.to_vec()), |c| (c.seq, c.hash.clone()));
    let wanted: HashMap<i64, Vec<&CheckpointRow>> =
        cps.iter()
            .filter(|c| c.seq > start_seq)
            .fold(HashMap::new(), |mut m, c| {
                m.entry(c.seq).or_default().push(c);
                m
            });
    let mut sum = ChainSummary {
        instance: instance.to_string(),
        start_seq,
        last_seq: start_seq,
        records: 0,
        checkpoints_ok: 0,
        vouched_seq: start_seq,
        tail_records: 0,
        tail_oldest_ms: None,
    };
    let found = |kind, seq, r: Option<&AuditRow>, detail: String| Finding {
        instance: instance.to_string(),
        kind,
        seq,
        record_id: r.map(|r| r.record_id.clone()),
        detail,
    };
    let mut rows = Rows {
        store,
        instance,
        buf: VecDeque::new(),
        after: None,
        done: false,
    };
    let (mut prev_hash, mut prev_row): (Vec<u8>, Option<AuditRow>) = (start_hash, None);
    loop {
        rows.fill().await?;
        let Some(r) = rows.buf.pop_front() else { break };
        let next = rows.buf.front();
        let prev_seq = sum.last_seq;
        if r.seq <= prev_seq {
            let why = format!("sequence number {} repeats or goes backwards after {prev_seq}", r.seq);
            return Ok((sum, Some(found(TamperKind::Inserted, r.seq, Some(&r), why))));
        }
        if r.seq > prev_seq + 1 {
            let why = format!(
                "records {}..={} missing before record {}",
                prev_seq + 1,
                r.seq - 1,
                r.record_id
            );
            return Ok((sum, Some(found(TamperKind::Deleted, prev_seq + 1, None, why))));
        }
        let o = orig_seq(&r);
        let linked = r.prev_hash == prev_hash;
        if o == Some(r.seq) && linked {
            for c in wanted.get(&r.seq).into_iter().flatten() {
                if c.hash != r.hash {
                    let why = format!(
                        "chain differs from signed {} checkpoint {}{} here: rewritten",
                        c.kind,
                        c.checkpoint_id,
                        ctx.place(c)
                    );
                    return Ok((sum, Some(found(TamperKind::Modified, r.seq, Some(&r), why))));
                }
                sum.checkpoints_ok += 1;
            }
            if wanted.contains_key(&r.seq) {
                (sum.vouched_seq, sum.tail_records, sum.tail_oldest_ms) = (r.seq, 0, None);
            } else {
                sum.tail_records += 1;
                sum.tail_oldest_ms = Some(sum.tail_oldest_ms.map_or(r.recorded_ms, |t| t.min(r.recorded_ms)));
            }
            sum.last_seq = r.seq;
            sum.records += 1;
            prev_hash = r.hash.clone();
            prev_row = Some(r);
            continue;
        }
        let next_shifted_up = next.is_some_and(|n| orig_seq(n) == Some(n.seq - 1));
        let f = match o {
            Some(s) if s == r.seq => match &prev_row {
                Some(p) => found(
                    TamperKind::Modified,
                    p.seq,
                    Some(p),
                    "its stored hash was changed: the next record no longer links to it".into(),
                ),
                None => found(
                    TamperKind::Modified,
                    r.seq,
                    Some(&r),
                    "first record does not link to the chain start".into(),
                ),
            },
            Some(s) if s == r.seq + 1 => match next {
                Some(n) if n.seq == r.seq + 1 && orig_seq(n) == Some(r.seq) => found(
                    TamperKind::Reordered,
                    r.seq,
                    Some(&r),
                    format!("records at {} and {} swapped (this one belongs at {s})", r.seq, n.seq),
                ),
                _ => found(
                    TamperKind::Deleted,
                    r.seq,
                    None,
                    format!(
                        "the record at {} was deleted and later records renumbered; record {} belongs at {s}",
                        r.seq, r.record_id
                    ),
                ),
            },
            Some(s) if s == r.seq - 1 => match &prev_row {
                Some(p) => found(
                    TamperKind::Inserted,
                    p.seq,
                    Some(p),
                    format!("added before record {}, which belongs at {s}", r.record_id),
                ),
                None => found(
                    TamperKind::Inserted,
                    r.seq,
                    Some(&r),
                    "record shifted before the chain start".into(),
                ),
            },
            None if next_shifted_up => found(
                TamperKind::Inserted,
                r.seq,
                Some(&r),
                "added here; the records after it were renumbered".into(),
            ),
            _ => found(
                TamperKind::Modified,
                r.seq,
                Some(&r),
                "content does not match its chain hash".into(),
            ),
        };
        return Ok((sum, Some(f)));
    }
    if let Some((&seq, cs)) = wanted.iter().filter(|(&s, _)| s > sum.last_seq).min_by_key(|(&s, _)| s) {
        let why = format!(
            "chain ends at {} but a signed {} checkpoint{} vouches for {seq}: records {}..={seq} deleted",
            sum.last_seq,
            cs[0].kind,
            ctx.place(cs[0]),
            sum.last_seq + 1
        );
        return Ok((
            sum.clone(),
            Some(found(TamperKind::Deleted, sum.last_seq + 1, None, why)),
        ));
    }
    let tail = ctx.bound.as_ref().and_then(|b| judge_tail(instance, &sum, b));
    Ok((sum, tail))
}

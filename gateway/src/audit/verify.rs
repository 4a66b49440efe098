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
//!   ([`TamperKind::Deleted`]).

use std::collections::{HashMap, VecDeque};
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
                "chain {}: seq {}..={}, {} records, {} checkpoints verified",
                c.instance,
                c.start_seq + 1,
                c.last_seq,
                c.records,
                c.checkpoints_ok
            )?;
        }
        for x in &self.findings {
            let id = x.record_id.as_deref().unwrap_or("-");
            writeln!(
                f,
                "TAMPERED {} seq {} record {}: {:?}: {}",
                x.instance, x.seq, id, x.kind, x.detail
            )?;
        }
        write!(
            f,
            "{}",
            if self.is_intact() {
                "RESULT: intact"
            } else {
                "RESULT: TAMPERED"
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
pub async fn verify(store: &Store, trusted: &[VerifyingKey]) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport::default();
    let mut by_instance: HashMap<String, Vec<CheckpointRow>> = HashMap::new();
    for c in store.audit_checkpoints().await? {
        if let Err(why) = check_checkpoint_signature(&c, trusted) {
            report.findings.push(Finding {
                instance: c.instance.clone(),
                kind: TamperKind::BadCheckpoint,
                seq: c.seq,
                record_id: None,
                detail: format!("checkpoint {} ({}) {why}", c.checkpoint_id, c.kind),
            });
            continue;
        }
        by_instance.entry(c.instance.clone()).or_default().push(c);
    }
    for instance in store.audit_instances().await? {
        let cps = by_instance.remove(&instance).unwrap_or_default();
        let (summary, finding) = verify_chain(store, &instance, &cps).await?;
        report.chains.push(summary);
        report.findings.extend(finding);
    }
    Ok(report)
}

async fn verify_chain(
    store: &Store,
    instance: &str,
    cps: &[CheckpointRow],
) -> Result<(ChainSummary, Option<Finding>), AuditError> {
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
                        "chain differs from signed {} checkpoint {} here: rewritten",
                        c.kind, c.checkpoint_id
                    );
                    return Ok((sum, Some(found(TamperKind::Modified, r.seq, Some(&r), why))));
                }
                sum.checkpoints_ok += 1;
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
            "chain ends at {} but a signed {} checkpoint vouches for {seq}: records {}..={seq} deleted",
            sum.last_seq,
            cs[0].kind,
            sum.last_seq + 1
        );
        return Ok((
            sum.clone(),
            Some(found(TamperKind::Deleted, sum.last_seq + 1, None, why)),
        ));
    }
    Ok((sum, None))
}

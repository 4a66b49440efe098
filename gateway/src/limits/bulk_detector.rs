//! Bulk-access detector: distinct patients per subject in a sliding window
//! (LOG-ACC-1 review of mass reads, EX-IDS-1 alert hook).
//!
//! Why distinct patients: a clinician reading one chart a hundred times is
//! normal; one account touching hundreds of *different* patients in an hour
//! is the signature of a leaked token or an insider harvesting records,
//! and rate limits do not catch it when it is done slowly.
//!
//! [`BulkAccessDetector::observe`] is called after each response with the
//! patients the request touched. It fires exactly once when a subject's
//! distinct count goes from `max_distinct_patients` to one more; it re-arms
//! when the count is back at or below the threshold *and* a window has passed
//! since the alert (so a steady scraper produces one alert per window, not
//! one per request). With `action = "block"` the subject goes to the
//! [`BlockStore`] until an operator unblocks it.
//!
//! Memory: patients are kept as 64-bit keyed digests, at most
//! `max_distinct_patients + 1` per subject (enough to decide), and at most
//! `max_subjects` subjects; when full, subjects with nothing left in their
//! window are dropped, and if none can be, the new subject is counted in one
//! shared overflow entry whose alerts name no subject (alert only, never
//! block: the overflow cannot be attributed to one account).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::bounded_store::DigestMap;
use super::config::{BulkAccessConfig, BulkAction};
use super::keys::KeyHasher;
use super::subject_blocks::{BlockReason, BlockStore};

/// Raised when one subject touched too many distinct patients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkAccessAlert {
    /// The subject; `None` for the overflow entry (table full).
    pub subject: Option<String>,
    /// Distinct patients in the window (threshold + 1 when it fires).
    pub distinct_patients: u32,
    /// The configured window.
    pub window: Duration,
    /// When it fired.
    pub at: SystemTime,
    /// Up to 8 patient digests (the detector's keyed hash of the patient id) from
    /// the window, for correlating with access-log entries during review.
    pub sample: Vec<u64>,
    /// Whether the subject was added to the block list.
    pub blocked: bool,
}

#[derive(Default)]
struct SubjectWindow {
    /// Digest → last time seen.
    seen: DigestMap<Instant>,
    /// (time, digest) in arrival order; stale pairs are skipped on expiry.
    order: VecDeque<(Instant, u64)>,
    alerted_at: Option<Instant>,
}

impl SubjectWindow {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(t, d)) = self.order.front() {
            if now.saturating_duration_since(t) < window {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&d) == Some(&t) {
                self.seen.remove(&d);
            }
        }
    }
}

struct Subjects {
    map: DigestMap<SubjectWindow>,
    overflow: SubjectWindow,
    /// Purges scan every subject: at most one per second.
    last_purge: Option<Instant>,
}

/// Counts distinct patients per subject and raises [`BulkAccessAlert`]s.
pub struct BulkAccessDetector {
    cfg: BulkAccessConfig,
    hasher: KeyHasher,
    subjects: Mutex<Subjects>,
    blocks: Option<Arc<dyn BlockStore>>,
}

impl BulkAccessDetector {
    /// Builds the detector; `blocks` is required for `action = "block"`
    /// (without it, alerts are raised but nobody is blocked).
    pub fn new(cfg: &BulkAccessConfig, blocks: Option<Arc<dyn BlockStore>>) -> Self {
        let subjects = Subjects {
            map: DigestMap::default(),
            overflow: SubjectWindow::default(),
            last_purge: None,
        };
        Self {
            cfg: cfg.clone(),
            hasher: KeyHasher::new(),
            subjects: Mutex::new(subjects),
            blocks,
        }
    }

    #[cfg(test)]
    /// The digest under which a patient id is counted and reported in alerts.
    pub fn patient_hash(&self, patient: &str) -> u64 {
        self.hasher.hash_str(patient)
    }

    /// Records that `subject` touched `patients` at `now`; returns the alert
    /// if this observation took the subject over the threshold.
    pub fn observe<'a>(
        &self,
        subject: &str,
        patients: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Option<BulkAccessAlert> {
        let window = self.cfg.window;
        let max = self.cfg.max_distinct_patients as usize;
        let digest = self.hasher.hash_str(subject);
        let mut guard = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        let subjects = &mut *guard;
        let purge_due = subjects
            .last_purge
            .is_none_or(|p| now.saturating_duration_since(p) >= Duration::from_secs(1));
        if purge_due && !subjects.map.contains_key(&digest) && subjects.map.len() >= self.cfg.max_subjects {
            subjects.last_purge = Some(now);
            subjects.map.retain(|_, w| {
                w.expire(now, window);
                !w.seen.is_empty() || w.alerted_at.is_some_and(|t| now.saturating_duration_since(t) < window)
            });
        }
        let overflow = !subjects.map.contains_key(&digest) && subjects.map.len() >= self.cfg.max_subjects;
        let w = if overflow {
            &mut subjects.overflow
        } else {
            subjects.map.entry(digest).or_default()
        };
        w.expire(now, window);
        let was_over = w.seen.len() > max;
        for p in patients {
            let d = self.hasher.hash_str(p);
            let known = w.seen.contains_key(&d);
            if !known && w.seen.len() > max {
                continue; // already decided; do not grow past threshold + 1
            }
            if w.seen.insert(d, now) != Some(now) {
                w.order.push_back((now, d));
            }
        }
        if w.order.len() > 4 * (max + 1) {
            // Re-reads left stale pairs behind: rebuild from the live set so
            // the queue stays O(threshold) however often patients are re-read.
            let mut live: Vec<(Instant, u64)> = w.seen.iter().map(|(d, t)| (*t, *d)).collect();
            live.sort_unstable();
            w.order = live.into();
        }
        let count = w.seen.len();
        let armed = w.alerted_at.is_none_or(|t| now.saturating_duration_since(t) >= window);
        if was_over || count <= max || !armed {
            return None;
        }
        w.alerted_at = Some(now);
        let sample = w.seen.keys().take(8).copied().collect();
        drop(guard);
        let block = !overflow && self.cfg.action == BulkAction::Block;
        let mut blocked = false;
        if let (true, Some(store)) = (block, &self.blocks) {
            let reason = BlockReason::BulkAccess {
                distinct_patients: count as u32,
                window,
            };
            store.block(subject, &reason);
            blocked = true;
        }
        metrics::counter!("phr_bulk_access_alerts_total", "blocked" => if blocked { "true" } else { "false" })
            .increment(1);
        tracing::warn!(
            subject = if overflow { "<overflow>" } else { subject },
            distinct_patients = count,
            window_secs = window.as_secs(),
            blocked,
            "bulk access detected"
        );
        Some(BulkAccessAlert {
            subject: (!overflow).then(|| subject.to_owned()),
            distinct_patients: count as u32,
            window,
            at: SystemTime::now(),
            sample,
            blocked,
        })
    }

    #[cfg(test)]
    /// Subjects tracked now (at most `max_subjects`).
    pub fn tracked_subjects(&self) -> usize {
        self.subjects.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::subject_blocks::MemoryBlockStore;
    use super::*;

    fn cfg(action: BulkAction) -> BulkAccessConfig {
        BulkAccessConfig {
            window: Duration::from_secs(3600),
            max_distinct_patients: 5,
            action,
            max_subjects: 50,
        }
    }

    #[test]
    fn fires_at_threshold_plus_one_not_at_threshold() {
        let det = BulkAccessDetector::new(&cfg(BulkAction::Alert), None);
        let t0 = Instant::now();
        let ids: Vec<String> = (0..7).map(|i| format!("Patient/{i}")).collect();
        for id in &ids[..5] {
            assert_eq!(det.observe("dr-a", [id.as_str(), id.as_str()], t0), None);
        }
        // Re-reading the same patients is not "more patients".
        assert_eq!(det.observe("dr-a", ids[..5].iter().map(String::as_str), t0), None);
        let alert = det
            .observe("dr-a", [ids[5].as_str()], t0)
            .expect("sixth distinct patient fires");
        assert_eq!(alert.distinct_patients, 6);
        assert_eq!(alert.subject.as_deref(), Some("dr-a"));
        assert!(alert.sample.contains(&det.patient_hash("Patient/5")));
        assert!(!alert.blocked);
        assert_eq!(det.observe("dr-a", [ids[6].as_str()], t0), None, "fires once");
        assert_eq!(det.observe("dr-b", [ids[0].as_str()], t0), None, "per subject");
    }

    #[test]
    fn window_slides() {
        let det = BulkAccessDetector::new(&cfg(BulkAction::Alert), None);
        let t0 = Instant::now();
        for i in 0..5 {
            det.observe("dr-a", [format!("P{i}").as_str()], t0);
        }
        let later = t0 + Duration::from_secs(3601);
        assert_eq!(det.observe("dr-a", ["P9"], later), None, "old patients expired");
    }

    #[test]
    fn block_action_blocks_until_unblocked() {
        let store = Arc::new(MemoryBlockStore::new());
        let det = BulkAccessDetector::new(&cfg(BulkAction::Block), Some(store.clone()));
        let t0 = Instant::now();
        let ids: Vec<String> = (0..6).map(|i| format!("P{i}")).collect();
        let alert = det.observe("dr-x", ids.iter().map(String::as_str), t0).unwrap();
        assert!(alert.blocked);
        assert!(store.is_blocked("dr-x"));
        assert!(store.unblock("dr-x"));
        assert!(!store.is_blocked("dr-x"));
    }

    #[test]
    fn memory_is_bounded() {
        let det = BulkAccessDetector::new(&cfg(BulkAction::Block), None);
        let t0 = Instant::now();
        for s in 0..1000 {
            let patients: Vec<String> = (0..100).map(|p| format!("P{p}")).collect();
            det.observe(&format!("s{s}"), patients.iter().map(String::as_str), t0);
        }
        assert!(det.tracked_subjects() <= 50);
        let subjects = det.subjects.lock().unwrap();
        assert!(subjects.map.values().all(|w| w.seen.len() <= 6));
        drop(subjects);
        // Re-reading one patient many times keeps the queue short.
        let det = BulkAccessDetector::new(&cfg(BulkAction::Alert), None);
        for i in 0..10_000u64 {
            det.observe("dr-r", ["P1"], t0 + Duration::from_millis(i));
        }
        let subjects = det.subjects.lock().unwrap();
        assert!(subjects.map.values().all(|w| w.order.len() <= 24));
    }
}

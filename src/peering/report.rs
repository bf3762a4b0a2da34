//! The refresh report: counts per class and relation, warnings, timers.

use std::collections::HashMap;
use std::time::Duration;

use crate::proto::v1 as pb;

/// Warnings kept in one report; the counts in the class reports stay exact.
const MAX_WARNINGS: usize = 1000;

/// Rows a refresh wrote, by its report's counters: objects added, updated
/// or deleted, and relation rows added or removed.
pub fn writes(report: &pb::RefreshReport) -> i64 {
    let objects: i64 = report
        .classes
        .iter()
        .map(|c| c.added + c.updated + c.deleted)
        .sum();
    let relations: i64 = report.relations.iter().map(|r| r.added + r.removed).sum();
    objects + relations
}

/// Number of objects a verifying refresh found differing (0 for another
/// refresh).
pub fn differing(report: &pb::RefreshReport) -> i64 {
    report
        .verify
        .iter()
        .flat_map(|v| &v.classes)
        .map(|c| c.differing)
        .sum()
}

/// Collects a [`pb::RefreshReport`] as a refresh goes.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    report: pb::RefreshReport,
    warnings_per_class: HashMap<String, usize>,
    dropped_warnings: usize,
}

impl ReportBuilder {
    /// A report for `peername`, started at `started` (Unix seconds) by
    /// `mode` (a call, the schedule, a follow stream).
    pub fn new(peername: &str, started: i64, mode: pb::SyncMode) -> ReportBuilder {
        ReportBuilder {
            report: pb::RefreshReport {
                peername: peername.to_owned(),
                started: crate::registry::timestamp(started),
                mode: mode as i32,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Records a skipped object.
    pub fn warn(
        &mut self,
        class: &str,
        peer_object_id: i64,
        natural_key: &str,
        reason: impl Into<String>,
    ) {
        *self.warnings_per_class.entry(class.to_owned()).or_default() += 1;
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(pb::SyncWarning {
                class: class.to_owned(),
                peer_object_id,
                natural_key: natural_key.to_owned(),
                reason: reason.into(),
            });
        } else {
            self.dropped_warnings += 1;
        }
    }

    /// Warnings recorded so far for `class`.
    pub fn warning_count(&self, class: &str) -> usize {
        self.warnings_per_class.get(class).copied().unwrap_or(0)
    }

    /// Records the counts of a class.
    pub fn class(&mut self, class: pb::ClassReport) {
        self.report.classes.push(class);
    }

    /// Adds to a recorded class's deletions `count` objects that went with
    /// objects of a later class (the keys of deleted persons).
    pub fn add_cascaded(&mut self, class: &str, count: usize) {
        if let Some(c) = self.report.classes.iter_mut().find(|c| c.class == class) {
            c.deleted += count as i64;
            c.cascaded += count as i64;
        }
    }

    /// Records the counts and time of a relation.
    pub fn relation(&mut self, name: &str, added: usize, removed: usize, took: Duration) {
        self.report.relations.push(pb::RelationReport {
            relation: name.to_owned(),
            added: added as i64,
            removed: removed as i64,
        });
        self.timer(name, took);
    }

    /// Records what the peer sent: everything or a delta, why everything
    /// when a delta was asked for, the checkpoint revision asked from and
    /// the one reached.
    pub fn snapshot(
        &mut self,
        kind: pb::SnapshotKind,
        full_reason: &str,
        since_revision: i64,
        revision: i64,
    ) {
        self.report.snapshot = kind as i32;
        self.report.full_reason = full_reason.to_owned();
        self.report.since_revision = since_revision;
        self.report.revision = revision;
    }

    /// Records what a verification's comparison found.
    pub fn verify(&mut self, verify: pb::VerifyReport) {
        self.report.verify = Some(verify);
    }

    /// Records the time of a phase.
    pub fn timer(&mut self, phase: &str, took: Duration) {
        self.report.timers.push(pb::PhaseTimer {
            phase: phase.to_owned(),
            seconds: took.as_secs_f64(),
        });
    }

    /// Number of objects written (added, updated, deleted) and relation rows
    /// changed so far.
    pub fn writes(&self) -> i64 {
        writes(&self.report)
    }

    /// Finishes the report with its outcome, reason and total time.
    pub fn finish(
        mut self,
        outcome: pb::RefreshOutcome,
        reason: impl Into<String>,
        total: Duration,
    ) -> pb::RefreshReport {
        if self.dropped_warnings > 0 {
            self.report.warnings.push(pb::SyncWarning {
                class: String::new(),
                peer_object_id: 0,
                natural_key: String::new(),
                reason: format!("{} more warnings not listed", self.dropped_warnings),
            });
        }
        self.report.outcome = outcome as i32;
        self.report.reason = reason.into();
        self.report.total_seconds = total.as_secs_f64();
        self.report
    }
}

//! Per-kernel totals of a profiler's events: what a tool prints or logs, without keeping one
//! event per dispatch for a whole run.

use std::collections::HashMap;
use std::time::Duration;

use super::{KernelEvent, TimingMode};

/// The GPU time of one kernel (one pipeline label) over the steps summarised.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelStats {
    /// The pipeline's label (its typed key, e.g. `matvec.q4_k`).
    pub label: String,
    /// Dispatches timed.
    pub count: u32,
    /// Their GPU time together.
    pub total: Duration,
    /// Bytes they read and wrote, by the kernels' own traffic estimate.
    pub bytes: u64,
}

impl KernelStats {
    /// GPU time per dispatch.
    pub fn mean(&self) -> Duration {
        self.total / self.count.max(1)
    }
}

/// Every kernel's [`KernelStats`], the most expensive first.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileSummary {
    /// How the times were taken (GPU timestamps, or CPU time around lone dispatches).
    pub mode: TimingMode,
    /// Steps the events came from.
    pub steps: u32,
    /// One entry per kernel label, by total time, longest first.
    pub kernels: Vec<KernelStats>,
}

impl ProfileSummary {
    pub(super) fn of(mode: TimingMode, events: &[KernelEvent]) -> ProfileSummary {
        let mut by_label: HashMap<&str, (u32, f64, u64)> = HashMap::new();
        let mut steps: Vec<u32> = events.iter().map(|e| e.step).collect();
        steps.dedup();
        for e in events {
            let s = by_label.entry(&e.label).or_default();
            *s = (s.0 + 1, s.1 + e.dur_ns, s.2 + e.bytes);
        }
        let mut kernels: Vec<KernelStats> = by_label
            .into_iter()
            .map(|(label, (count, ns, bytes))| KernelStats {
                label: label.to_string(),
                count,
                total: Duration::from_nanos(ns.round() as u64),
                bytes,
            })
            .collect();
        // Ties broken by label, so equal totals print in a stable order.
        kernels.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.label.cmp(&b.label)));
        ProfileSummary { mode, steps: steps.len() as u32, kernels }
    }

    /// GPU time of every kernel together.
    pub fn total(&self) -> Duration {
        self.kernels.iter().map(|k| k.total).sum()
    }

    /// Whether no dispatch was timed since the last summary.
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::profile::Phase;

    fn event(label: &str, step: u32, dur_ns: f64) -> KernelEvent {
        KernelEvent { label: label.into(), phase: Phase::Decode, step, start_ns: 0.0, dur_ns, bytes: 10 }
    }

    #[test]
    fn kernels_are_summed_per_label_longest_first() {
        let events =
            [event("a", 1, 100.0), event("b", 1, 1000.0), event("a", 2, 300.0), event("a", 2, 200.0)];
        let s = ProfileSummary::of(TimingMode::InsidePasses, &events);
        assert_eq!(s.steps, 2);
        let names: Vec<&str> = s.kernels.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        let a = &s.kernels[1];
        assert_eq!((a.count, a.total, a.bytes), (3, Duration::from_nanos(600), 30));
        assert_eq!(a.mean(), Duration::from_nanos(200));
        assert_eq!(s.total(), Duration::from_nanos(1600));
        assert!(ProfileSummary::of(TimingMode::CpuWait, &[]).is_empty());
    }
}

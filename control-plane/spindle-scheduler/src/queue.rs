//! The scheduling queue: pending pods by priority then arrival, with back-off for pods
//! that failed and a parking lot for pods that fit nowhere until the cluster changes.
//!
//! Heaps are lazily cleaned: an entry carries the sequence number it was pushed with and
//! is skipped on pop if the pod has since been deleted, re-queued or moved.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::SchedPod;

/// kube-scheduler's defaults: back-off 1s doubling to 10s.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even if nothing seems to change
/// (a missed cluster event must not strand a pod forever).
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Backoff,
    Unschedulable(Instant),
    /// Decided; a bind request is in flight.
    InFlight,
    /// Bound by us; waiting for the watch to show it.
    Bound,
}

struct Entry {
    pod: Arc<SchedPod>,
    state: State,
    seq: u64,
    attempts: u32,
    last_attempt: Option<Instant>,
    /// The last FailedScheduling message recorded, to not repeat identical events.
    last_message: Option<String>,
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    /// The parked pods with inter-pod rules: a pod placed anywhere may be what they wait
    /// for (a pod to be near, a domain count to even out).
    parked_inter: HashSet<String>,
    next_seq: u64,
}

fn backoff_for(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

impl Queue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn state(&self, key: &str) -> Option<State> {
        self.entries.get(key).map(|e| e.state)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn activate(&mut self, key: &str) {
        let seq = self.seq();
        if let Some(e) = self.entries.get_mut(key) {
            if let State::Unschedulable(_) = e.state {
                self.unschedulable.remove(key);
                self.parked_inter.remove(key);
            }
            e.state = State::Active;
            e.seq = seq;
            self.active
                .push((e.pod.priority, Reverse(seq), key.to_string()));
        }
    }

    fn defer_until(&mut self, key: &str, until: Instant) {
        let seq = self.seq();
        if let Some(e) = self.entries.get_mut(key) {
            if let State::Unschedulable(_) = e.state {
                self.unschedulable.remove(key);
                self.parked_inter.remove(key);
            }
            e.state = State::Backoff;
            e.seq = seq;
            self.backoff.push(Reverse((until, seq, key.to_string())));
        }
    }

    /// A pending pod appeared or changed.
    pub fn upsert(&mut self, key: &str, pod: Arc<SchedPod>) {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        pod,
                        state: State::Active,
                        seq: 0,
                        attempts: 0,
                        last_attempt: None,
                        last_message: None,
                    },
                );
                self.activate(key);
            }
            // Our own status patches and other writes that leave the scheduling inputs
            // alone must not re-trigger scheduling.
            Some(e) if e.pod == pod => {}
            Some(e) => {
                e.pod = pod;
                // A changed pod (new tolerations, say) may fit now.
                if matches!(e.state, State::Unschedulable(_) | State::Backoff) {
                    self.activate(key);
                }
            }
        }
    }

    /// The pod is gone, bound elsewhere, or no longer ours.
    pub fn remove(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.unschedulable.remove(key);
            self.parked_inter.remove(key);
        }
    }

    /// Next pod to schedule; it is marked in flight.
    pub fn pop(&mut self, now: Instant) -> Option<(String, Arc<SchedPod>)> {
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&key) {
                if e.seq == seq && e.state == State::Active {
                    e.state = State::InFlight;
                    e.attempts += 1;
                    e.last_attempt = Some(now);
                    return Some((key, e.pod.clone()));
                }
            }
        }
        None
    }

    /// The pod fits nowhere. Returns true when `message` differs from the one last
    /// reported, i.e. when a status update and event are due.
    pub fn unschedulable(&mut self, key: &str, message: &str, now: Instant) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        e.state = State::Unschedulable(now);
        self.unschedulable.insert(key.to_string());
        if e.pod.inter.is_some() {
            self.parked_inter.insert(key.to_string());
        }
        if e.last_message.as_deref() == Some(message) {
            false
        } else {
            e.last_message = Some(message.to_string());
            true
        }
    }

    /// A transient failure (bind error): try again after back-off.
    pub fn retry_later(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.entries.get(key) {
            let until = now + backoff_for(e.attempts);
            self.defer_until(key, until);
        }
    }

    /// The bind succeeded; keep the entry until the watch shows the pod bound, so a late
    /// event of the still-unbound pod does not queue it again.
    pub fn bound(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Bound;
        }
    }

    /// Something changed that may let parked pods fit: move them to active, or to
    /// back-off if they were tried too recently.
    pub fn cluster_changed(&mut self, now: Instant) {
        let keys: Vec<String> = self.unschedulable.drain().collect();
        self.parked_inter.clear();
        for key in keys {
            self.wake(&key, now);
        }
    }

    /// A pod was placed (by us or seen bound): wake the parked pods with inter-pod rules
    /// only; resources and node properties did not become any more available.
    pub fn pod_placed(&mut self, now: Instant) {
        if self.parked_inter.is_empty() {
            return;
        }
        let keys: Vec<String> = self.parked_inter.drain().collect();
        for key in keys {
            self.unschedulable.remove(&key);
            self.wake(&key, now);
        }
    }

    fn wake(&mut self, key: &str, now: Instant) {
        let due = self
            .entries
            .get(key)
            .and_then(|e| e.last_attempt.map(|t| t + backoff_for(e.attempts)));
        match due {
            Some(due) if due > now => self.defer_until(key, due),
            _ => self.activate(key),
        }
    }

    /// Move back-off pods whose time has come, and long-parked pods, to active.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((at, seq, key))) = self.backoff.peek().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.state == State::Backoff)
            {
                self.activate(&key);
            }
        }
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.entries.get(*k).is_some_and(
                    |e| matches!(e.state, State::Unschedulable(t) if now >= t + UNSCHEDULABLE_FLUSH),
                )
            })
            .cloned()
            .collect();
        for k in stale {
            self.activate(&k);
        }
    }

    /// When `flush` next has work: the earliest back-off expiry.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Pods in flight or waiting for their bind to show, kept across a pod relist.
    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32) -> Arc<SchedPod> {
        Arc::new(SchedPod {
            uid: name.into(),
            namespace: "default".into(),
            name: name.into(),
            priority,
            preempt_never: false,
            requests: Default::default(),
            nz_cpu: 0,
            nz_memory: 0,
            node_selector: vec![],
            needs_containers: false,
            required: None,
            preferred: vec![],
            tolerations: vec![],
            spread_key: None,
            meta: Default::default(),
            inter: None,
            claims: vec![],
            volume_required: vec![],
        })
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.upsert("a", pod("a", 0));
        q.upsert("b", pod("b", 10));
        q.upsert("c", pod("c", 0));
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now).map(|(k, _)| k)).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn a_placement_wakes_only_pods_with_inter_pod_rules() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        let mut near = (*pod("near", 0)).clone();
        near.inter = Some(Box::default());
        q.upsert("near", Arc::new(near));
        q.upsert("big", pod("big", 0));
        while q.pop(t0).is_some() {}
        q.unschedulable("near", "m", t0);
        q.unschedulable("big", "m", t0);
        let later = t0 + Duration::from_secs(30);
        q.pod_placed(later);
        let woken: Vec<String> = std::iter::from_fn(|| q.pop(later).map(|(k, _)| k)).collect();
        assert_eq!(woken, ["near"]);
        assert!(matches!(q.state("big"), Some(State::Unschedulable(_))));
    }

    #[test]
    fn deleted_pods_are_dropped() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.upsert("a", pod("a", 0));
        q.upsert("b", pod("b", 0));
        q.remove("a");
        assert_eq!(q.pop(now).map(|(k, _)| k), Some("b".into()));
        assert!(q.pop(now).is_none());
    }

    #[test]
    fn unschedulable_waits_for_change_and_dedups_messages() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.upsert("a", pod("a", 0));
        assert!(q.pop(now).is_some());
        assert_eq!(q.state("a"), Some(State::InFlight));
        assert!(q.unschedulable("a", "m1", now));
        assert!(q.pop(now).is_none(), "parked, not retried in a loop");
        // Same unchanged pod from the watch (e.g. our status patch) does not wake it.
        q.upsert("a", pod("a", 0));
        assert!(q.pop(now).is_none());
        // A cluster change soon after the attempt goes through back-off.
        q.cluster_changed(now);
        assert!(q.pop(now).is_none());
        let later = now + Duration::from_secs(2);
        q.flush(later);
        assert!(q.pop(later).is_some());
        assert!(
            !q.unschedulable("a", "m1", later),
            "same message: no new event"
        );
        assert!(q.unschedulable("a", "m2", later));
        // The periodic flush retries long-parked pods.
        let much_later = later + UNSCHEDULABLE_FLUSH;
        q.flush(much_later);
        assert!(q.pop(much_later).is_some());
    }

    #[test]
    fn backoff_grows_to_cap() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(30), MAX_BACKOFF);
    }
}

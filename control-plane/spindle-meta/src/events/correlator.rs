//! What client-go's event correlator decides before an event is written: similar events
//! are aggregated, repeats become count patches, and a chatty source is throttled per
//! object. Kubernetes' components all record through it, so a Job of 10,000 pods gets a
//! handful of "Created pod" events, not 10,000 writes; doing the same keeps our write load
//! and our `kubectl describe` output the same as theirs.
//!
//! Pure state, no I/O: the recorder asks, then writes what the answer says.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Distinct messages of one (source, object, type, reason) within [`AGGREGATE_WINDOW`]
/// from which on the events are combined into one (client-go: 10 in 10 minutes).
const AGGREGATE_MAX: usize = 10;
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Writes one source may make about one object at once, then one per five minutes
/// (client-go's defaultSpamBurst and defaultSpamQPS).
const SPAM_BURST: f64 = 25.0;
const SPAM_QPS: f64 = 1.0 / 300.0;
/// Keys remembered per cache (client-go keeps 4096 in an LRU; a full cache is cleared
/// here, which at worst lets an old source speak again: no event is wrongly suppressed).
const MAX_KEYS: usize = 4096;

/// The message prefix client-go gives combined events.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// One event as a component reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Draft {
    /// The object's uid (or, without one, its kind/namespace/name).
    pub object: String,
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
}

/// What to write.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing: the source said too much about this object lately.
    Skip,
    /// A new Event with this message (the combined one, once aggregated); remember it
    /// under `key` once created.
    Create { key: String, message: String },
    /// Bump an Event created earlier under `key` to `count` (and its latest message).
    Patch {
        key: String,
        count: i32,
        message: String,
    },
}

/// A token bucket: `burst` tokens, refilled at `qps`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    qps: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            burst,
            qps,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.qps).min(self.burst);
        self.at = now;
    }

    /// Take a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Take a token, saying how long to wait before using it (zero when one was there).
    pub fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

/// The messages seen of one aggregate key lately.
struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

/// One event key: its occurrences so far, and the Event (name, namespace) holding them
/// once written, which later occurrences patch.
#[derive(Default)]
struct Seen {
    count: i32,
    event: Option<(String, String)>,
}

#[derive(Default)]
pub struct Correlator {
    similar: HashMap<String, Similar>,
    seen: HashMap<String, Seen>,
    spam: HashMap<String, TokenBucket>,
}

fn bounded<V>(m: &mut HashMap<String, V>) {
    if m.len() >= MAX_KEYS {
        m.clear();
    }
}

impl Correlator {
    /// client-go's EventCorrelate: aggregate, then observe (dedupe), then filter.
    pub fn correlate(&mut self, d: &Draft, now: Instant) -> Decision {
        let (key, message) = self.aggregate(d, now);
        if !self.seen.contains_key(&key) {
            bounded(&mut self.seen);
        }
        // Counted even when the write is skipped below, as client-go does: a later patch
        // carries the true number of occurrences.
        let seen = self.seen.entry(key.clone()).or_default();
        seen.count += 1;
        let count = seen.count;
        bounded(&mut self.spam);
        let bucket = self
            .spam
            .entry(d.object.clone())
            .or_insert_with(|| TokenBucket::new(SPAM_QPS, SPAM_BURST, now));
        if !bucket.try_take(now) {
            return Decision::Skip;
        }
        if count == 1 {
            Decision::Create { key, message }
        } else {
            Decision::Patch {
                key,
                count,
                message,
            }
        }
    }

    /// The key and message to record under: the event's own, or once an object has had
    /// [`AGGREGATE_MAX`] distinct messages of one reason lately, the combined event's.
    fn aggregate(&mut self, d: &Draft, now: Instant) -> (String, String) {
        let agg_key = format!("{}\u{0}{}\u{0}{}", d.object, d.type_, d.reason);
        bounded(&mut self.similar);
        let rec = self.similar.entry(agg_key.clone()).or_insert(Similar {
            messages: HashSet::new(),
            last: now,
        });
        if now.saturating_duration_since(rec.last) > AGGREGATE_WINDOW {
            rec.messages.clear();
        }
        rec.last = now;
        rec.messages.insert(d.message.clone());
        if rec.messages.len() < AGGREGATE_MAX {
            let key = format!("{agg_key}\u{0}{}", d.message);
            return (key, d.message.clone());
        }
        // Do not let the set grow past the threshold (client-go pops one).
        if let Some(any) = rec.messages.iter().next().cloned() {
            rec.messages.remove(&any);
        }
        (agg_key, format!("{COMBINED_PREFIX}{}", d.message))
    }

    /// The Event written under `key`: (name, namespace).
    pub fn event(&self, key: &str) -> Option<(String, String)> {
        self.seen.get(key).and_then(|s| s.event.clone())
    }

    /// The write under `key` made or updated this Event.
    pub fn wrote(&mut self, key: &str, event: (String, String)) {
        if let Some(s) = self.seen.get_mut(key) {
            s.event = Some(event);
        }
    }

    /// A write under `key` failed for good: forget it, so the next one creates anew.
    pub fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(object: &str, reason: &str, message: &str) -> Draft {
        Draft {
            object: object.into(),
            type_: "Normal",
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn repeats_become_count_patches() {
        let mut c = Correlator::default();
        let t = Instant::now();
        let d = draft("job-uid", "Completed", "Job completed");
        assert!(matches!(c.correlate(&d, t), Decision::Create { .. }));
        assert!(matches!(
            c.correlate(&d, t),
            Decision::Patch { count: 2, .. }
        ));
    }

    #[test]
    fn ten_distinct_messages_of_one_reason_are_combined() {
        let mut c = Correlator::default();
        let t = Instant::now();
        let mut decisions = Vec::new();
        for i in 0..12 {
            let d = draft(
                "job-uid",
                "SuccessfulCreate",
                &format!("Created pod: p-{i}"),
            );
            decisions.push(c.correlate(&d, t));
        }
        // Nine events of their own, then one combined event bumped from there on.
        for d in &decisions[..9] {
            assert!(
                matches!(d, Decision::Create { message, .. } if !message.starts_with(COMBINED_PREFIX)),
                "{d:?}"
            );
        }
        assert_eq!(
            decisions[9],
            Decision::Create {
                key: "job-uid\u{0}Normal\u{0}SuccessfulCreate".into(),
                message: format!("{COMBINED_PREFIX}Created pod: p-9")
            }
        );
        assert!(
            matches!(&decisions[10], Decision::Patch { count: 2, message, .. } if message.ends_with("p-10"))
        );
        assert!(matches!(&decisions[11], Decision::Patch { count: 3, .. }));
    }

    #[test]
    fn a_source_is_throttled_per_object_after_its_burst() {
        let mut c = Correlator::default();
        let t = Instant::now();
        let written = (0..100)
            .map(|i| c.correlate(&draft("job-uid", &format!("R{i}"), "m"), t))
            .filter(|d| *d != Decision::Skip)
            .count();
        assert_eq!(written, 25);
        // Another object is not affected.
        assert_ne!(c.correlate(&draft("other", "R", "m"), t), Decision::Skip);
        // One more write five minutes later, counting all the skipped repeats.
        let later = t + Duration::from_secs(300);
        assert_eq!(
            c.correlate(&draft("job-uid", "R99", "m"), later),
            Decision::Patch {
                key: "job-uid\u{0}Normal\u{0}R99\u{0}m".into(),
                count: 2,
                message: "m".into()
            }
        );
        assert_eq!(
            c.correlate(&draft("job-uid", "R99", "m"), later),
            Decision::Skip
        );
    }

    #[test]
    fn the_bucket_says_how_long_to_wait() {
        let t = Instant::now();
        let mut b = TokenBucket::new(50.0, 2.0, t);
        assert_eq!(b.take(t), Duration::ZERO);
        assert_eq!(b.take(t), Duration::ZERO);
        assert_eq!(b.take(t), Duration::from_millis(20));
        assert_eq!(b.take(t), Duration::from_millis(40));
    }
}

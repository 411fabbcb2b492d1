//! From the replica count the metrics propose to the one the HPA sets: stabilization over
//! recent recommendations, then the scaling rate limits, as kube-controller-manager's
//! `normalizeDesiredReplicas` (no `behavior`) and `normalizeDesiredReplicasWithBehaviors`
//! do it. The history is per HPA and lives as long as the controller, as kube's does.

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// The scale-up bound without `behavior`: twice the pods, at least 4.
const SCALE_UP_FACTOR: i32 = 2;
const SCALE_UP_MINIMUM: i32 = 4;

/// A condition to set: (reason, message).
pub type Why = (&'static str, &'static str);

pub const READY_FOR_NEW_SCALE: Why = ("ReadyForNewScale", "recommended size matches current size");
const SCALE_UP_STABILIZED: Why = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const SCALE_DOWN_STABILIZED: Why = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const WITHIN_RANGE: Why = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const SCALE_UP_LIMIT: Why = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const SCALE_DOWN_LIMIT: Why = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const TOO_MANY: Why = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: Why = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);

/// One HPA's past: recommendations and the scale changes made.
#[derive(Default, Debug)]
pub struct History {
    recommendations: Vec<(i32, DateTime<Utc>)>,
    ups: Vec<(i32, DateTime<Utc>)>,
    downs: Vec<(i32, DateTime<Utc>)>,
}

/// What normalization decided, with the AbleToScale and ScalingLimited reasons.
#[derive(Debug, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    pub able: Why,
    /// The limit that applied (ScalingLimited True), or within range (False).
    pub limited: (bool, Why),
}

/// The bounds an HPA sets and the state it acts on.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub min: i32,
    pub max: i32,
    pub current: i32,
}

impl History {
    /// Keep `proposed` in the recommendations: in place of one older than `keep` if
    /// there is one, else added.
    fn record(&mut self, proposed: i32, older: impl Fn(DateTime<Utc>) -> bool, now: DateTime<Utc>) {
        match self.recommendations.iter().rposition(|(_, t)| older(*t)) {
            Some(i) => self.recommendations[i] = (proposed, now),
            None => self.recommendations.push((proposed, now)),
        }
    }

    /// `normalizeDesiredReplicas`: the highest recommendation of the downscale window,
    /// then at most twice the pods (at least 4) and within min and max.
    pub fn normalize(
        &mut self,
        b: Bounds,
        proposed: i32,
        down_window: Duration,
        now: DateTime<Utc>,
    ) -> Normalized {
        let cutoff = now - down_window;
        let stabilized = self
            .recommendations
            .iter()
            .filter(|(_, t)| *t >= cutoff)
            .map(|(r, _)| *r)
            .fold(proposed, i32::max);
        self.record(proposed, |t| t < cutoff, now);
        let able = if stabilized != proposed {
            SCALE_DOWN_STABILIZED
        } else {
            READY_FOR_NEW_SCALE
        };
        let up_limit = SCALE_UP_FACTOR
            .saturating_mul(b.current)
            .max(SCALE_UP_MINIMUM);
        let (max_allowed, over) = if b.max > up_limit {
            (up_limit, SCALE_UP_LIMIT)
        } else {
            (b.max, TOO_MANY)
        };
        let (replicas, why) = if stabilized < b.min {
            (b.min, TOO_FEW)
        } else if stabilized > max_allowed {
            (max_allowed, over)
        } else {
            (stabilized, WITHIN_RANGE)
        };
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, why),
        }
    }

    /// `normalizeDesiredReplicasWithBehaviors`: stabilized within the lowest recent
    /// recommendation of the scale-up window and the highest of the scale-down window,
    /// then limited by the rate the policies allow.
    pub fn normalize_with(
        &mut self,
        b: Bounds,
        proposed: i32,
        behavior: &HorizontalPodAutoscalerBehavior,
        now: DateTime<Utc>,
    ) -> Normalized {
        let (up, down) = (rules(&behavior.scale_up), rules(&behavior.scale_down));
        let window = |r: &HPAScalingRules| {
            Duration::seconds(i64::from(r.stabilization_window_seconds.unwrap_or(0)))
        };
        let (up_cut, down_cut) = (now - window(up), now - window(down));
        let mut up_rec = proposed;
        let mut down_rec = proposed;
        for (r, t) in &self.recommendations {
            if *t > up_cut {
                up_rec = up_rec.min(*r);
            }
            if *t > down_cut {
                down_rec = down_rec.max(*r);
            }
        }
        self.record(proposed, |t| t < up_cut && t < down_cut, now);
        let stabilized = b.current.max(up_rec).min(down_rec);
        let able = match (stabilized != proposed, proposed >= b.current) {
            (false, _) => READY_FOR_NEW_SCALE,
            (true, true) => SCALE_UP_STABILIZED,
            (true, false) => SCALE_DOWN_STABILIZED,
        };
        let (replicas, why) = self.rate_limited(b, stabilized, up, down, now);
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, why),
        }
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn rate_limited(
        &self,
        b: Bounds,
        desired: i32,
        up: &HPAScalingRules,
        down: &HPAScalingRules,
        now: DateTime<Utc>,
    ) -> (i32, Why) {
        if desired > b.current {
            let limit = self.limit(b.current, up, true, now).max(b.current);
            let (max_allowed, why) = if b.max > limit {
                (limit, SCALE_UP_LIMIT)
            } else {
                (b.max, TOO_MANY)
            };
            if desired > max_allowed {
                return (max_allowed, why);
            }
        } else if desired < b.current {
            let limit = self.limit(b.current, down, false, now).min(b.current);
            let (min_allowed, why) = if b.min < limit {
                (limit, SCALE_DOWN_LIMIT)
            } else {
                (b.min, TOO_FEW)
            };
            if desired < min_allowed {
                return (min_allowed, why);
            }
        }
        (desired, WITHIN_RANGE)
    }

    /// The furthest the policies let the count go from `current`, up or down
    /// (`calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`).
    fn limit(&self, current: i32, r: &HPAScalingRules, up: bool, now: DateTime<Utc>) -> i32 {
        let select = r.select_policy.as_deref().unwrap_or("Max");
        if select == "Disabled" {
            return current;
        }
        // "Max" is the largest change: the highest count up, the lowest down.
        let largest = select != "Min";
        let proposals = r.policies.iter().flatten().map(|p| {
            let period = Duration::seconds(i64::from(p.period_seconds));
            let added = changed_since(&self.ups, now - period);
            let removed = changed_since(&self.downs, now - period);
            // Policy values have no upper bound in the API: saturate, never overflow.
            let start = current.saturating_sub(added).saturating_add(removed);
            let start_f = f64::from(start);
            let pct = f64::from(p.value) / 100.0;
            match (p.type_.as_str(), up) {
                ("Pods", true) => start.saturating_add(p.value),
                ("Pods", false) => start.saturating_sub(p.value),
                (_, true) => (start_f * (1.0 + pct)).ceil() as i32,
                (_, false) => (start_f * (1.0 - pct)) as i32,
            }
        });
        if up == largest {
            proposals.max().unwrap_or(current)
        } else {
            proposals.min().unwrap_or(current)
        }
    }

    /// Remember a change of the scale, for the rate limits (`storeScaleEvent`); changes
    /// older than every policy period are dropped.
    pub fn scaled(&mut self, from: i32, to: i32, longest_period: Duration, now: DateTime<Utc>) {
        let cutoff = now - longest_period;
        self.ups.retain(|(_, t)| *t >= cutoff);
        self.downs.retain(|(_, t)| *t >= cutoff);
        if to > from {
            self.ups.push((to - from, now));
        } else if to < from {
            self.downs.push((from - to, now));
        }
    }
}

fn changed_since(events: &[(i32, DateTime<Utc>)], since: DateTime<Utc>) -> i32 {
    events
        .iter()
        .filter(|(_, t)| *t > since)
        .fold(0i32, |sum, (n, _)| sum.saturating_add(*n))
}

/// The rules the API server defaulted (it fills both directions in when `behavior` is
/// set); an empty rule set only if something bypassed that.
fn rules(r: &Option<HPAScalingRules>) -> &HPAScalingRules {
    static EMPTY: HPAScalingRules = HPAScalingRules {
        policies: None,
        select_policy: None,
        stabilization_window_seconds: None,
        tolerance: None,
    };
    r.as_ref().unwrap_or(&EMPTY)
}

/// The longest policy period of a behavior, for how long scale changes are remembered.
pub fn longest_period(b: Option<&HorizontalPodAutoscalerBehavior>) -> Duration {
    let periods = b
        .into_iter()
        .flat_map(|b| [&b.scale_up, &b.scale_down])
        .flatten()
        .flat_map(|r| r.policies.iter().flatten())
        .map(|p| p.period_seconds);
    Duration::seconds(i64::from(periods.max().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn policy(type_: &str, value: i32, period: i32) -> HPAScalingPolicy {
        HPAScalingPolicy {
            type_: type_.into(),
            value,
            period_seconds: period,
        }
    }

    fn behavior(down_window: i32) -> HorizontalPodAutoscalerBehavior {
        HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: Some("Max".into()),
                policies: Some(vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]),
                tolerance: None,
            }),
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(down_window),
                select_policy: Some("Max".into()),
                policies: Some(vec![policy("Percent", 100, 15)]),
                tolerance: None,
            }),
        }
    }

    #[test]
    fn without_behavior_a_drop_waits_out_the_window_and_growth_is_bounded() {
        let mut h = History::default();
        let t0 = Utc::now();
        let b = Bounds {
            min: 1,
            max: 20,
            current: 4,
        };
        let w = Duration::minutes(5);
        let n = h.normalize(b, 10, w, t0);
        assert_eq!(n.replicas, 8, "twice the pods at most");
        assert_eq!(n.limited, (true, SCALE_UP_LIMIT));
        let later = t0 + Duration::minutes(1);
        let n = h.normalize(Bounds { current: 8, ..b }, 2, w, later);
        assert_eq!((n.replicas, n.able), (10, SCALE_DOWN_STABILIZED));
        let n = h.normalize(Bounds { current: 8, ..b }, 2, w, t0 + Duration::minutes(7));
        assert_eq!((n.replicas, n.able), (2, READY_FOR_NEW_SCALE));
    }

    #[test]
    fn policies_limit_the_rate_and_a_short_down_window_lets_go_soon() {
        let mut h = History::default();
        let t0 = Utc::now();
        let b = Bounds {
            min: 1,
            max: 10,
            current: 1,
        };
        let n = h.normalize_with(b, 9, &behavior(5), t0);
        // The larger of +4 pods and +100 %: 5.
        assert_eq!(n.replicas, 5);
        assert_eq!(n.limited, (true, SCALE_UP_LIMIT));
        h.scaled(1, 5, longest_period(Some(&behavior(5))), t0);
        // Within the same 15 s period the four added pods count against the limit.
        let n = h.normalize_with(
            Bounds { current: 5, ..b },
            9,
            &behavior(5),
            t0 + Duration::seconds(5),
        );
        assert_eq!(n.replicas, 5);
        let n = h.normalize_with(
            Bounds { current: 5, ..b },
            9,
            &behavior(5),
            t0 + Duration::seconds(16),
        );
        assert_eq!(n.replicas, 9);
        // Idle: held by the window's highest recommendation, then down to the minimum.
        let b9 = Bounds { current: 9, ..b };
        let n = h.normalize_with(b9, 1, &behavior(5), t0 + Duration::seconds(18));
        assert_eq!((n.replicas, n.able), (9, SCALE_DOWN_STABILIZED));
        let n = h.normalize_with(b9, 1, &behavior(5), t0 + Duration::seconds(30));
        assert_eq!((n.replicas, n.able), (1, READY_FOR_NEW_SCALE));
    }

    #[test]
    fn a_disabled_direction_does_not_move() {
        let mut h = History::default();
        let mut b = behavior(0);
        if let Some(r) = b.scale_down.as_mut() {
            r.select_policy = Some("Disabled".into());
        }
        let n = h.normalize_with(
            Bounds {
                min: 1,
                max: 10,
                current: 6,
            },
            2,
            &b,
            Utc::now(),
        );
        assert_eq!(n.replicas, 6);
        assert_eq!(n.limited, (true, SCALE_DOWN_LIMIT));
    }
}

//! Pure parts of the Deployment controller: pod-template hashing, maxSurge/maxUnavailable
//! resolution, the rolling-update and proportional-scaling arithmetic, revision
//! annotations and status conditions. Nothing here talks to the API server, so the
//! rules kubectl depends on can be tested in isolation.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Kubernetes caps revision-history at this many characters, dropping the oldest.
const REVISION_HISTORY_MAX_CHARS: usize = 2000;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

// ---------------------------------------------------------------------------
// pod-template-hash

pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Kubernetes' `rand.SafeEncodeString`: maps each byte into an alphabet without vowels
/// or look-alike characters, so names never spell words or confuse readers.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Drop nulls, empty maps and empty lists, sort keys: two templates that differ only in
/// how "absent" was spelled (server defaulting, `None` vs `Some(vec![])`) compare and hash
/// the same.
fn canonical(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Array(a) => {
            let items: Vec<Value> = a
                .iter()
                .map(|x| canonical(x).unwrap_or(Value::Null))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m
                .iter()
                .filter_map(|(k, x)| canonical(x).map(|c| (k, c)))
                .collect();
            if sorted.is_empty() {
                return None;
            }
            Some(Value::Object(
                sorted.into_iter().map(|(k, x)| (k.clone(), x)).collect(),
            ))
        }
        other => Some(other.clone()),
    }
}

fn template_value_without_hash(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    serde_json::to_value(&t)
        .ok()
        .and_then(|v| canonical(&v))
        .unwrap_or(Value::Null)
}

/// The `pod-template-hash` of a template: FNV-32a over its canonical JSON (plus the
/// collision count, little-endian, as Kubernetes appends it), in decimal, safe-encoded.
pub fn pod_template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let v = template_value_without_hash(t);
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// Templates equal once the pod-template-hash label is ignored (how a Deployment finds
/// its current ReplicaSet, and how `rollout undo` lands on an old one).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_value_without_hash(a) == template_value_without_hash(b)
}

// ---------------------------------------------------------------------------
// maxSurge / maxUnavailable

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// A sum of replica counts that saturates: each count is a client's number (a spec, or a
/// status written through /status), and several huge ones must not overflow.
pub fn sum_counts(counts: impl IntoIterator<Item = i32>) -> i32 {
    clamp_i32(counts.into_iter().map(i64::from).sum())
}

/// An int-or-percent against `total`; percentages round up for surge and down for
/// unavailability, so a rollout errs towards capacity.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        None => Ok(0),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"))?;
            // The percentage is the user's: saturate rather than overflow.
            let scaled = pct.saturating_mul(i64::from(total));
            let v = if round_up {
                scaled.saturating_add(99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            Ok(clamp_i32(v))
        }
    }
}

/// (maxSurge, maxUnavailable) as absolute counts. When both round to zero,
/// unavailability becomes 1 so the rollout can move at all.
pub fn resolve_fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let s = scaled_value(surge, desired, true)?;
    let u = scaled_value(unavailable, desired, false)?;
    if s == 0 && u == 0 {
        return Ok((0, 1));
    }
    Ok((s, u))
}

/// The numbers every step of a sync needs, resolved once from the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub replicas: i32,
    pub rolling: bool,
    pub max_surge: i32,
    pub max_unavailable: i32,
}

impl Params {
    pub fn from_spec(spec: &DeploymentSpec) -> Result<Params, String> {
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.strategy.as_ref();
        let rolling = strategy
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            != "Recreate";
        if !rolling {
            return Ok(Params {
                replicas,
                rolling,
                max_surge: 0,
                max_unavailable: 0,
            });
        }
        let default = IntOrString::String("25%".into());
        let ru = strategy.and_then(|s| s.rolling_update.as_ref());
        let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default);
        let unavail = ru
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&default);
        let (max_surge, max_unavailable) =
            resolve_fenceposts(Some(surge), Some(unavail), replicas)?;
        Ok(Params {
            replicas,
            rolling,
            // replicas + maxSurge is computed everywhere: keep it representable.
            max_surge: max_surge.clamp(0, i32::MAX - replicas),
            max_unavailable: max_unavailable.clamp(0, replicas),
        })
    }

    /// Unavailability the Available condition tolerates (none for Recreate or 0 replicas).
    pub fn available_slack(&self) -> i32 {
        if !self.rolling || self.replicas == 0 {
            0
        } else {
            self.max_unavailable
        }
    }
}

// ---------------------------------------------------------------------------
// rolling-update arithmetic over a light view of ReplicaSets

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RsView {
    pub name: String,
    /// creationTimestamp in seconds, for oldest-first ordering.
    pub created: i64,
    pub spec: i32,
    pub available: i32,
    /// `deployment.kubernetes.io/max-replicas`, if present.
    pub max_replicas: Option<i32>,
}

impl RsView {
    /// Availability we may count on: pods above `spec` are already on their way out, so
    /// a stale status must not let them justify scaling something else down.
    fn trusted_available(&self) -> i32 {
        self.available.min(self.spec).max(0)
    }
}

/// Size of the new ReplicaSet for this step: up to `replicas + maxSurge` pods in total,
/// never more than `replicas` in the new set.
pub fn rolling_new_size(p: &Params, total_spec: i32, new_spec: i32) -> i32 {
    if new_spec >= p.replicas {
        return p.replicas;
    }
    let max_total = p.replicas + p.max_surge;
    if total_spec >= max_total {
        return new_spec;
    }
    let up = max_total
        .saturating_sub(total_spec)
        .min(p.replicas.saturating_sub(new_spec));
    new_spec.saturating_add(up)
}

/// New sizes for the old ReplicaSets (given oldest first): first shed their unavailable
/// pods, then scale down as far as keeping `replicas - maxUnavailable` available allows.
pub fn rolling_old_sizes(p: &Params, olds: &[RsView], new: Option<&RsView>) -> Vec<i32> {
    let mut sizes: Vec<i32> = olds.iter().map(|r| r.spec).collect();
    let old_total = sum_counts(sizes.iter().copied());
    if old_total == 0 {
        return sizes;
    }
    let new_spec = new.map_or(0, |n| n.spec);
    let new_avail = new.map_or(0, |n| n.trusted_available());
    let min_available = p.replicas - p.max_unavailable;
    let new_unavailable = (new_spec - new_avail).max(0);
    let max_scaled_down = clamp_i32(
        i64::from(old_total) + i64::from(new_spec)
            - i64::from(min_available)
            - i64::from(new_unavailable),
    );
    if max_scaled_down <= 0 {
        return sizes;
    }
    // Unhealthy old pods count against availability anyway, so removing them first costs
    // nothing and frees room for the new ReplicaSet.
    let mut cleaned = 0;
    for (i, r) in olds.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = sizes[i] - r.trusted_available();
        if sizes[i] == 0 || unhealthy <= 0 {
            continue;
        }
        let d = unhealthy.min(max_scaled_down - cleaned);
        sizes[i] -= d;
        cleaned += d;
    }
    let available = sum_counts(
        olds.iter()
            .zip(&sizes)
            .map(|(r, s)| r.trusted_available().min(*s))
            .chain([new_avail]),
    );
    if available <= min_available {
        return sizes;
    }
    let mut budget = available.saturating_sub(min_available);
    for s in sizes.iter_mut() {
        if budget <= 0 {
            break;
        }
        if *s == 0 {
            continue;
        }
        let d = (*s).min(budget);
        *s -= d;
        budget -= d;
    }
    sizes
}

/// Sizes after a change of `replicas` while several ReplicaSets are active: each keeps
/// its share of the previous size (from its max-replicas annotation), the rounding
/// leftover goes to the largest. `rss` are the active sets; `status_replicas` stands in
/// for a missing annotation.
pub fn proportional_sizes(p: &Params, rss: &[RsView], status_replicas: i32) -> Vec<i32> {
    let total = sum_counts(rss.iter().map(|r| r.spec));
    let allowed = if p.replicas > 0 {
        p.replicas + p.max_surge
    } else {
        0
    };
    let to_add = allowed.saturating_sub(total);
    let mut order: Vec<usize> = (0..rss.len()).collect();
    // Growing: largest first, newer breaking ties; shrinking: largest first, older first.
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&rss[a], &rss[b]);
        rb.spec.cmp(&ra.spec).then_with(|| {
            if to_add > 0 {
                rb.created
                    .cmp(&ra.created)
                    .then_with(|| rb.name.cmp(&ra.name))
            } else {
                ra.created
                    .cmp(&rb.created)
                    .then_with(|| ra.name.cmp(&rb.name))
            }
        })
    });
    let mut sizes: Vec<i32> = rss.iter().map(|r| r.spec).collect();
    if to_add == 0 || rss.is_empty() {
        return sizes;
    }
    let mut added = 0;
    for &i in &order {
        let r = &rss[i];
        if r.spec == 0 || added == to_add {
            continue;
        }
        let fraction = if p.replicas == 0 {
            -r.spec
        } else {
            let annotated = r
                .max_replicas
                .filter(|m| *m > 0)
                .unwrap_or(status_replicas.max(1));
            let target = (f64::from(r.spec) * f64::from(p.replicas + p.max_surge)
                / f64::from(annotated))
            .round() as i32;
            target.saturating_sub(r.spec)
        };
        let left = to_add.saturating_sub(added);
        let prop = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        sizes[i] = sizes[i].saturating_add(prop);
        added = added.saturating_add(prop);
    }
    if added != to_add {
        let first = order[0];
        sizes[first] = sizes[first]
            .saturating_add(to_add.saturating_sub(added))
            .max(0);
    }
    sizes
}

// ---------------------------------------------------------------------------
// revisions and annotations

pub fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// Bring the annotations of the Deployment's current ReplicaSet up to date: the
/// Deployment's own annotations (change-cause among them), the revision (keeping the old
/// number in revision-history when an old set is brought back), and on creation the
/// replica annotations. Returns whether anything changed.
pub fn set_new_rs_annotations(
    rs: &mut BTreeMap<String, String>,
    deploy: &BTreeMap<String, String>,
    new_revision: i64,
    creating: bool,
    p: &Params,
) -> bool {
    let mut changed = false;
    for (k, v) in deploy {
        if skip_copy(k) || rs.get(k) == Some(v) {
            continue;
        }
        rs.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = rs.get(REVISION).cloned();
    let old_num: i64 = match &old {
        None => 0,
        Some(s) => match s.parse() {
            Ok(n) => n,
            // A revision we cannot read is left for a human to fix rather than overwritten.
            Err(_) => return changed,
        },
    };
    if old_num < new_revision {
        rs.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = rs.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let mut entries: Vec<&str> = history.split(',').filter(|s| !s.is_empty()).collect();
            entries.push(&old);
            let mut len = entries
                .iter()
                .map(|e| e.len() + 1)
                .sum::<usize>()
                .saturating_sub(1);
            let mut start = 0;
            while len > REVISION_HISTORY_MAX_CHARS && start + 1 < entries.len() {
                len -= entries[start].len() + 1;
                start += 1;
            }
            rs.insert(REVISION_HISTORY.into(), entries[start..].join(","));
        }
    }
    if creating {
        changed |= set_replicas_annotations(rs, p);
    }
    changed
}

/// desired-replicas / max-replicas, which proportional scaling reads back later.
pub fn set_replicas_annotations(rs: &mut BTreeMap<String, String>, p: &Params) -> bool {
    let desired = p.replicas.to_string();
    let max = (p.replicas + p.max_surge).to_string();
    let mut changed = false;
    if rs.get(DESIRED_REPLICAS) != Some(&desired) {
        rs.insert(DESIRED_REPLICAS.into(), desired);
        changed = true;
    }
    if rs.get(MAX_REPLICAS) != Some(&max) {
        rs.insert(MAX_REPLICAS.into(), max);
        changed = true;
    }
    changed
}

// ---------------------------------------------------------------------------
// conditions and status

pub fn now() -> Time {
    // Time travels at second precision; keeping it so here makes a freshly built status
    // compare equal to what the server hands back.
    let t = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let t = now();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

pub fn get_condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

pub fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

/// Kubernetes' SetDeploymentCondition: same status and reason is a no-op (times keep
/// meaning "since when"); same status keeps the transition time.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conds = s.conditions.get_or_insert_with(Vec::new);
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

pub fn has_progress_deadline(spec: &DeploymentSpec) -> bool {
    spec.progress_deadline_seconds
        .is_some_and(|s| s != i32::MAX)
}

/// Zero counts are omitted on the wire (omitempty in Kubernetes), so store them as absent
/// to compare like with like.
pub fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

pub fn complete(p: &Params, generation: i64, s: &DeploymentStatus) -> bool {
    let g = |v: Option<i32>| v.unwrap_or(0);
    g(s.updated_replicas) == p.replicas
        && g(s.replicas) == p.replicas
        && g(s.available_replicas) == p.replicas
        && s.observed_generation.unwrap_or(0) >= generation
}

pub fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas).saturating_sub(g(old.updated_replicas));
    let new_old = g(new.replicas).saturating_sub(g(new.updated_replicas));
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// Seconds left before the Progressing condition times out (negative once past), or
/// None when no deadline applies in the condition's current state.
pub fn deadline_remaining(spec: &DeploymentSpec, s: &DeploymentStatus, now_s: i64) -> Option<i64> {
    if !has_progress_deadline(spec) {
        return None;
    }
    let c = get_condition(s, PROGRESSING)?;
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) | Some(TIMED_OUT) | Some(PAUSED) => None,
        _ => {
            let from = c.last_update_time.as_ref()?.0.as_second();
            Some(from + i64::from(spec.progress_deadline_seconds.unwrap_or(600)) - now_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "nginx".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn ios(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn safe_encoding_of_digits() {
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn hash_is_stable_and_well_formed() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert!(!a.is_empty() && a.len() <= 10);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        // The hash label itself and absent-vs-empty spellings do not move the hash.
        let mut t = template("nginx:1");
        if let Some(m) = t.metadata.as_mut() {
            m.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), a.clone());
            m.annotations = Some(BTreeMap::new());
        }
        assert_eq!(a, pod_template_hash(&t, None));
        assert!(equal_ignore_hash(&t, &template("nginx:1")));
        assert!(!equal_ignore_hash(&t, &template("nginx:2")));
        // Fixed value: a change here would rename every ReplicaSet on upgrade.
        assert_eq!(a, "c677dcdbd");
    }

    #[test]
    fn int_or_percent_rounding() {
        assert_eq!(scaled_value(Some(&ios("25%")), 10, true), Ok(3));
        assert_eq!(scaled_value(Some(&ios("25%")), 10, false), Ok(2));
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 10, false), Ok(2));
        assert_eq!(scaled_value(Some(&ios("100%")), 3, true), Ok(3));
        assert!(scaled_value(Some(&ios("abc")), 3, true).is_err());
        // 25% of 3: surge rounds up to 1, unavailable rounds down to 0.
        assert_eq!(
            resolve_fenceposts(Some(&ios("25%")), Some(&ios("25%")), 3),
            Ok((1, 0))
        );
        // Both zero after rounding: allow one unavailable so the rollout can move.
        assert_eq!(
            resolve_fenceposts(Some(&ios("0%")), Some(&ios("10%")), 3),
            Ok((0, 1))
        );
    }

    #[test]
    fn params_defaults_and_recreate() {
        let spec = DeploymentSpec {
            replicas: Some(4),
            ..Default::default()
        };
        assert_eq!(
            Params::from_spec(&spec),
            Ok(Params {
                replicas: 4,
                rolling: true,
                max_surge: 1,
                max_unavailable: 1
            })
        );
        let spec = DeploymentSpec {
            replicas: Some(4),
            strategy: Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            ..Default::default()
        };
        let p = Params::from_spec(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.rolling);
        assert_eq!(p.available_slack(), 0);
    }

    #[test]
    fn huge_numbers_saturate_instead_of_overflowing() {
        let huge = IntOrString::Int(i32::MAX);
        let spec = DeploymentSpec {
            replicas: Some(3),
            strategy: Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: None,
                rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDeployment {
                    max_surge: Some(huge),
                    max_unavailable: Some(ios("9223372036854775807%")),
                }),
            }),
            ..Default::default()
        };
        let p = Params::from_spec(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.max_surge, p.max_unavailable), (i32::MAX - 3, 3));
        assert_eq!(rolling_new_size(&p, 3, 0), 3);
        let mut annotations = BTreeMap::new();
        set_replicas_annotations(&mut annotations, &p);
        assert_eq!(annotations[MAX_REPLICAS], i32::MAX.to_string());
        let sets = [
            rs("a", 1, i32::MAX, i32::MAX),
            rs("b", 2, i32::MAX, i32::MAX),
        ];
        assert_eq!(sum_counts(sets.iter().map(|r| r.spec)), i32::MAX);
        // The budget (saturated at i32::MAX) empties the oldest first.
        assert_eq!(rolling_old_sizes(&p, &sets, None), [0, i32::MAX]);
        assert_eq!(proportional_sizes(&p, &sets, i32::MAX).len(), 2);
        assert_eq!(
            scaled_value(Some(&ios("9223372036854775807%")), i32::MAX, true),
            Ok(i32::MAX)
        );
    }

    fn rs(name: &str, created: i64, spec: i32, available: i32) -> RsView {
        RsView {
            name: name.into(),
            created,
            spec,
            available,
            max_replicas: None,
        }
    }

    #[test]
    fn rolling_steps_converge_without_dropping_below_min_available() {
        // 3 replicas, surge 1, unavailable 0 (25% defaults on 3).
        let p = Params {
            replicas: 3,
            rolling: true,
            max_surge: 1,
            max_unavailable: 0,
        };
        let mut old = rs("old", 1, 3, 3);
        let mut new = rs("new", 2, 0, 0);
        for _ in 0..20 {
            new.spec = rolling_new_size(&p, old.spec + new.spec, new.spec);
            assert!(old.spec + new.spec <= 4, "surge bound");
            // Pods become available instantly in this model.
            new.available = new.spec;
            let sizes = rolling_old_sizes(&p, std::slice::from_ref(&old), Some(&new));
            old.spec = sizes[0];
            assert!(
                old.spec.min(old.available) + new.available >= 3,
                "availability bound"
            );
            old.available = old.available.min(old.spec);
        }
        assert_eq!((old.spec, new.spec), (0, 3));
    }

    #[test]
    fn rolling_first_step_and_unhealthy_cleanup() {
        let p = Params {
            replicas: 10,
            rolling: true,
            max_surge: 3,
            max_unavailable: 2,
        };
        assert_eq!(rolling_new_size(&p, 10, 0), 3);
        assert_eq!(rolling_new_size(&p, 13, 3), 3);
        assert_eq!(rolling_new_size(&p, 12, 9), 10);
        assert_eq!(rolling_new_size(&p, 10, 12), 10);
        // New set not available yet: only the 2 allowed unavailable go.
        let olds = [rs("a", 1, 10, 10)];
        assert_eq!(
            rolling_old_sizes(&p, &olds, Some(&rs("n", 2, 3, 0))),
            vec![8]
        );
        // Old sets with broken pods lose those first, oldest first.
        let olds = [rs("a", 1, 5, 2), rs("b", 2, 5, 5)];
        assert_eq!(
            rolling_old_sizes(&p, &olds, Some(&rs("n", 3, 3, 3))),
            vec![0, 5]
        );
    }

    #[test]
    fn proportional_scaling_keeps_shares() {
        let p = Params {
            replicas: 20,
            rolling: true,
            max_surge: 3,
            max_unavailable: 2,
        };
        // Mid-rollout at 10 replicas (max 13): old 8, new 5 -> scale to 20 (max 23).
        let mut a = rs("old", 1, 8, 8);
        let mut b = rs("new", 2, 5, 0);
        a.max_replicas = Some(13);
        b.max_replicas = Some(13);
        let sizes = proportional_sizes(&p, &[a.clone(), b.clone()], 13);
        assert_eq!(sizes.iter().sum::<i32>(), 23);
        assert_eq!(sizes, vec![14, 9]);
        // Down to 0: everything goes.
        let p0 = Params {
            replicas: 0,
            rolling: true,
            max_surge: 0,
            max_unavailable: 0,
        };
        assert_eq!(proportional_sizes(&p0, &[a, b], 13), vec![0, 0]);
    }

    #[test]
    fn revision_bookkeeping() {
        let p = Params {
            replicas: 3,
            rolling: true,
            max_surge: 1,
            max_unavailable: 0,
        };
        let deploy: BTreeMap<String, String> = [
            (
                "kubernetes.io/change-cause".to_string(),
                "set image".to_string(),
            ),
            (REVISION.to_string(), "2".to_string()),
            (LAST_APPLIED.to_string(), "{}".to_string()),
        ]
        .into();
        let mut rs = BTreeMap::new();
        assert!(set_new_rs_annotations(&mut rs, &deploy, 3, true, &p));
        assert_eq!(rs.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            rs.get("kubernetes.io/change-cause").map(String::as_str),
            Some("set image")
        );
        assert_eq!(rs.get(DESIRED_REPLICAS).map(String::as_str), Some("3"));
        assert_eq!(rs.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert!(!rs.contains_key(LAST_APPLIED));
        assert!(!rs.contains_key(REVISION_HISTORY));
        // Steady state: nothing to do.
        assert!(!set_new_rs_annotations(&mut rs, &deploy, 3, false, &p));
        // Brought back by undo twice: old numbers accumulate.
        assert!(set_new_rs_annotations(&mut rs, &deploy, 5, false, &p));
        assert!(set_new_rs_annotations(&mut rs, &deploy, 7, false, &p));
        assert_eq!(rs.get(REVISION).map(String::as_str), Some("7"));
        assert_eq!(rs.get(REVISION_HISTORY).map(String::as_str), Some("3,5"));
        assert_eq!(revision_of(Some(&rs)), 7);
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut s = DeploymentStatus::default();
        let mut c = new_condition(PROGRESSING, "True", NEW_RS_CREATED, "x".into());
        c.last_transition_time = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        set_condition(&mut s, c);
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "True", RS_UPDATED, "y".into()),
        );
        let cur = get_condition(&s, PROGRESSING)
            .cloned()
            .unwrap_or_else(|| panic!("missing"));
        assert_eq!(cur.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(
            cur.last_transition_time,
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
        );
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "False", TIMED_OUT, "z".into()),
        );
        let cur = get_condition(&s, PROGRESSING)
            .cloned()
            .unwrap_or_else(|| panic!("missing"));
        assert_ne!(
            cur.last_transition_time,
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
        );
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }
}

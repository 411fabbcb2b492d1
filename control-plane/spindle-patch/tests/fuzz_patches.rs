//! Property tests ("fuzzing" that runs in `cargo test`) over the patch engines the API
//! server runs on a client's body: JSON patch, merge patch, strategic merge patch and
//! server-side apply, each applied to a valid object.
//!
//! Patches are derived from the object itself by a random tape of decisions (keep, drop,
//! null, replace with an edge value, repeat list elements, add `$patch`, `$retainKeys`,
//! `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives, nest deeply), so
//! they reach the list strategies and directives rather than failing at the first key.
//! Every application must return (never panic) within [`MAX_CASE_TIME`], and a result's
//! size must be bounded by the sizes of object and patch: JSON patch `copy` within the
//! 3 MiB kube-apiserver allows (CVE-2019-1002100), the other engines without any growth
//! beyond what the patch itself holds.
//!
//! Bound, so that CI (`cargo test --workspace`) runs it every time: proptest's 256 cases per
//! property (an eighth of that for the costly ones), each case within [`MAX_CASE_TIME`] or
//! failed, a few seconds in all in a debug build. A longer local run:
//! `PROPTEST_CASES=20000 cargo test -p spindle-patch --test fuzz_patches`.
//! A failure prints the shrunk input: make it a regression unit test beside the fix.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use spindle_patch::{json_patch, merge_patch, ssa, strategic_merge_patch};

/// Generous: a patch of a small object applies in microseconds.
const MAX_CASE_TIME: Duration = Duration::from_secs(2);
/// What all `copy` operations of one JSON patch may add (kube-apiserver's
/// `JSONPatchMaxCopyBytes`, its request body limit).
const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;
/// Deep enough to pass the decoders' nesting limits (128 for JSON and YAML).
const DEEP: usize = 120;

fn objects() -> Vec<Value> {
    let pod_spec = json!({
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {"name": "web", "image": "nginx:1.27",
             "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}],
             "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
            {"name": "sidecar", "image": "busybox", "command": ["sh", "-c", "sleep 1"]}
        ],
        "initContainers": [{"name": "init", "image": "busybox"}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
        "imagePullSecrets": [{"name": "reg"}],
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]
    });
    let metadata = json!({
        "name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7",
        "labels": {"app": "web", "a/b": "1"}, "annotations": {"note": "x"},
        "finalizers": ["example.com/a", "example.com/b"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u0"}]
    });
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
               "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec.clone()}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec,
               "status": {"conditions": [{"type": "Ready", "status": "True"}], "podIPs": [{"ip": "10.0.0.1"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v", "": "empty"}}),
    ]
}

/// Values at the edges of what the engines expect where an object, list or scalar was.
static EDGES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(-0.0),
        json!(""),
        json!("$patch"),
        json!("x".repeat(1000)),
        json!([]),
        json!({}),
        json!([null]),
        json!([[]]),
        json!({"name": null}),
        json!({"name": "web"}),
        json!({"name": "web", "$patch": "delete"}),
        json!({"$patch": "replace"}),
        json!({"$patch": "bogus"}),
        json!([{"name": "web"}, {"name": "web"}]),
        json!(["example.com/a", "example.com/a"]),
        json!({"$retainKeys": ["name"]}),
        json!({"$retainKeys": "name"}),
    ]
});

/// Decisions for [`derive`], one byte per node visited; past its end every node is kept.
struct Tape<'a>(std::slice::Iter<'a, u8>);

impl Tape<'_> {
    fn next(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        let i = usize::from(self.next()) % from.len();
        from[i].clone()
    }
}

/// A variant of `v` (`None`: leave the field out), steered by the tape.
fn derive(v: &Value, t: &mut Tape) -> Option<Value> {
    match t.next() % 32 {
        16..=18 => Some(Value::Null),
        19..=22 => Some(t.pick(&EDGES)),
        23..=24 => None,
        25 => Some(json!([v])),
        26 => {
            let mut deep = t.pick(&EDGES);
            for _ in 0..DEEP {
                deep = json!({"a": deep});
            }
            Some(deep)
        }
        _ => Some(match v {
            Value::Object(m) => derive_map(m, t),
            Value::Array(a) => derive_list(a, t),
            other => other.clone(),
        }),
    }
}

fn derive_map(m: &Map<String, Value>, t: &mut Tape) -> Value {
    let mut out = Map::new();
    for (k, child) in m {
        if let Some(c) = derive(child, t) {
            out.insert(k.clone(), c);
        }
    }
    let keys: Vec<String> = m.keys().cloned().collect();
    let lists: Vec<String> = m
        .iter()
        .filter(|(_, v)| v.is_array())
        .map(|(k, _)| k.clone())
        .collect();
    // Zero (what an exhausted tape gives) is always "change nothing".
    match t.next() % 16 {
        1 => {
            let how = t.pick(&["replace", "delete", "merge", "bogus"]);
            out.insert("$patch".into(), json!(how));
        }
        2 => {
            let mut keep: Vec<Value> = keys
                .iter()
                .filter(|_| t.next().is_multiple_of(2))
                .map(|k| json!(k))
                .collect();
            keep.push(json!("nope"));
            out.insert("$retainKeys".into(), Value::Array(keep));
        }
        3 if !lists.is_empty() => {
            let list = t.pick(&lists);
            let mut order = m[&list].as_array().cloned().unwrap_or_default();
            order.reverse();
            order.push(json!({"name": "absent"}));
            out.insert(format!("$setElementOrder/{list}"), Value::Array(order));
        }
        4 if !lists.is_empty() => {
            let list = t.pick(&lists);
            let values = m[&list].clone();
            out.insert(format!("$deleteFromPrimitiveList/{list}"), values);
        }
        5 => {
            let key = t.pick(&[
                "x",
                "$patch",
                "$setElementOrder/",
                "$deleteFromPrimitiveList/x",
                "containers",
                "",
            ]);
            out.insert(key.to_owned(), t.pick(&EDGES));
        }
        _ => {}
    }
    Value::Object(out)
}

fn derive_list(a: &[Value], t: &mut Tape) -> Value {
    let mut out = Vec::new();
    for item in a {
        match t.next() % 8 {
            1 => {}
            2 => out.extend(derive(item, t).into_iter().chain(derive(item, t))),
            3 => out.push(match item {
                Value::Object(m) => {
                    let mut d = m.clone();
                    d.insert("$patch".into(), json!("delete"));
                    Value::Object(d)
                }
                other => other.clone(),
            }),
            _ => out.extend(derive(item, t)),
        }
    }
    if t.next() % 4 == 1 {
        out.push(t.pick(&EDGES));
    }
    Value::Array(out)
}

/// A patch derived from `object`: always an object at the root (what every engine
/// requires; anything else is refused at once and tests nothing).
fn variant(object: &Value, tape: &[u8]) -> Value {
    match object {
        Value::Object(m) => derive_map(m, &mut Tape(tape.iter())),
        other => other.clone(),
    }
}

/// Every JSON pointer into `v` (escaped), plus pointers that are not there or not valid.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_owned());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            out.push(format!("{at}/-"));
            out.push(format!("{at}/{}", a.len()));
            out.push(format!("{at}/99999999999999999999"));
            out.push(format!("{at}/01"));
            for (i, c) in a.iter().enumerate() {
                pointers(c, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

/// Runs `f` on `input` bytes of object and patch, requires it to be quick and its error
/// to be of bounded size (messages quote paths and values, escaped), and returns the
/// result's size (0 for an error).
fn timed<E: std::fmt::Display>(
    what: &str,
    input: usize,
    f: impl FnOnce() -> Result<Value, E>,
) -> Result<usize, TestCaseError> {
    let start = Instant::now();
    let res = f();
    let took = start.elapsed();
    prop_assert!(took <= MAX_CASE_TIME, "{what} took {took:?}");
    match res {
        Ok(v) => Ok(size(&v)),
        Err(e) => {
            let len = e.to_string().len();
            prop_assert!(
                len <= 4096 + 4 * input,
                "{what}: {len}-byte error for {input} bytes"
            );
            Ok(0)
        }
    }
}

/// One JSON patch operation, well-formed or not; pointers are picked from the object's.
fn op(kind: u8, path: &str, from: &str, value: Value) -> Value {
    // One malformed operation fails the whole patch, so they are kept rare (3 in 64).
    match kind % 64 {
        0 => json!({"op": "add", "path": path}),
        1 => json!({"op": "frobnicate", "path": path}),
        2 => value,
        3 => json!({"op": "copy", "from": path, "path": format!("{path}/-")}),
        // `test` of a random value fails the patch too: one weight in nine.
        k => match k % 9 {
            0..=2 => json!({"op": "add", "path": path, "value": value}),
            3 => json!({"op": "remove", "path": path}),
            4 | 5 => json!({"op": "replace", "path": path, "value": value}),
            6 => json!({"op": "move", "from": from, "path": path}),
            7 => json!({"op": "copy", "from": from, "path": path}),
            _ => json!({"op": "test", "path": path, "value": value}),
        },
    }
}

/// Shrinking a failure replays the property many times: bounded, so a failing CI run
/// still ends in minutes.
const MAX_SHRINK_MS: u32 = 60_000;

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_time: MAX_SHRINK_MS, ..ProptestConfig::default() })]

    #[test]
    fn json_patches(
        obj in any::<Index>(),
        ops in prop::collection::vec((any::<u8>(), any::<Index>(), any::<Index>(), any::<Index>()), 0..12),
    ) {
        let objects = objects();
        let original = obj.get(&objects);
        let mut ptrs = vec!["/x".to_owned(), "/x/-".to_owned()];
        pointers(original, "", &mut ptrs);
        let values = &*EDGES;
        let patch = Value::Array(
            ops.iter()
                .map(|(k, p, f, v)| op(*k, p.get(&ptrs).as_str(), f.get(&ptrs).as_str(), v.get(values).clone()))
                .collect(),
        );
        let out = timed("JSON patch", size(original) + size(&patch), || json_patch(original, &patch))?;
        prop_assert!(out <= size(original) + size(&patch) + MAX_COPY_BYTES, "JSON patch grew the object to {out} bytes");
    }

    /// The same patch as an RFC 7396 merge patch and as a strategic merge patch (what
    /// `kubectl patch` and client-side `kubectl apply` send): neither adds anything the
    /// patch does not hold.
    #[test]
    fn merge_patches(obj in any::<Index>(), tape in prop::collection::vec(any::<u8>(), 0..256)) {
        let objects = objects();
        let original = obj.get(&objects);
        let patch = variant(original, &tape);
        let bound = size(original) + size(&patch);
        let out = timed("merge patch", bound, || merge_patch(original, &patch))?;
        prop_assert!(out <= bound, "merge patch grew the object to {out} bytes");
        let out = timed("strategic merge patch", bound, || strategic_merge_patch(original, &patch))?;
        prop_assert!(out <= bound, "strategic merge patch grew the object to {out} bytes");
    }

    /// Two managers apply variants of the object in turn (the second maybe forcing), on an
    /// object that exists or not: what `kubectl apply --server-side` does.
    #[test]
    fn server_side_applies(
        obj in any::<Index>(),
        first in prop::collection::vec(any::<u8>(), 0..256),
        second in prop::collection::vec(any::<u8>(), 0..256),
        exists in any::<bool>(),
        force in any::<bool>(),
    ) {
        let objects = objects();
        let original = obj.get(&objects);
        let a = variant(original, &first);
        let b = variant(original, &second);
        let now = "2026-01-01T00:00:00Z";
        let live = exists.then_some(original);
        let mut applied = None;
        let out = timed("apply", size(original) + size(&a), || {
            let r = ssa::apply(live, &a, "one", "v1", false, now);
            applied = r.as_ref().ok().cloned();
            r
        })?;
        // managedFields spell each applied path again, list keys escaped inside strings.
        prop_assert!(out <= 2 * size(original) + 8 * size(&a) + 4096, "apply grew the object to {out} bytes");
        let live = applied.as_ref().or(live);
        let out2 = timed("second apply", out + size(original) + size(&b), || ssa::apply(live, &b, "two", "v1", force, now))?;
        prop_assert!(out2 <= 2 * (out + size(original)) + 8 * size(&b) + 4096, "second apply grew the object to {out2} bytes");
    }
}

proptest! {
    // Each case copies up to the 3 MiB limit, ~40 ms in a debug build: an eighth of the
    // cases (32 by default) covers the chains.
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases / 8, max_shrink_time: MAX_SHRINK_MS, ..ProptestConfig::default() })]

    /// `copy` of a value into itself (or beside itself) doubles it each time.
    #[test]
    fn json_patch_copy_chains(
        width in 1usize..2000,
        copies in prop::collection::vec(0usize..4, 1..64),
    ) {
        let mut ops = vec![json!({"op": "add", "path": "/x", "value": vec!["0123456789"; width]})];
        for c in copies {
            let (from, path) = [("/x", "/x/-"), ("/x", "/y"), ("/y", "/x/0"), ("", "/z")][c];
            ops.push(json!({"op": "copy", "from": from, "path": path}));
        }
        let original = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let patch = Value::Array(ops);
        let out = timed("JSON patch copies", size(&original) + size(&patch), || json_patch(&original, &patch))?;
        prop_assert!(out <= size(&original) + size(&patch) + MAX_COPY_BYTES, "copies grew the object to {out} bytes");
    }
}

/// The properties above mean something only if derived patches reach the engines: an
/// untouched tape yields the object itself, which every engine accepts as a no-op.
#[test]
fn derived_patches_apply() {
    for o in objects() {
        let same = variant(&o, &[]);
        assert_eq!(same, o);
        assert_eq!(merge_patch(&o, &same).expect("merge"), o);
        assert_eq!(strategic_merge_patch(&o, &same).expect("smp"), o);
        ssa::apply(Some(&o), &same, "m", "v1", false, "2026-01-01T00:00:00Z").expect("apply");
    }
}

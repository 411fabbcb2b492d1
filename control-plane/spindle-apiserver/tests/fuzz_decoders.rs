//! Property tests ("fuzzing" that runs in `cargo test`) over the API server's request body
//! decoder, `decode_body`: JSON under every JSON content type (with the duplicate-field
//! scan strict validation uses), YAML (bodies and server-side apply), protobuf, and any
//! other media type a client names.
//!
//! For arbitrary bytes, for real manifests and random documents with text spliced in
//! (truncation, deep nesting, huge numbers, anchors and aliases, tags, duplicated keys,
//! broken escapes), and for YAML alias bombs, decoding must return (never panic) within
//! [`MAX_CASE_TIME`] with a 4xx error of bounded size or a value whose size is bounded by
//! the input's ([`max_nodes`]): an alias bomb is refused, not expanded.
//!
//! Bound, so that CI (`cargo test --workspace`) runs it every time: proptest's 256 cases per
//! property (an eighth of that for the costly ones), each case within [`MAX_CASE_TIME`] or
//! failed, a few seconds in all in a debug build. A longer local run:
//! `PROPTEST_CASES=20000 cargo test -p spindle-apiserver --test fuzz_decoders`.
//! A failure prints the shrunk input: make it a regression unit test beside the fix.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::Value;
use spindle_apiserver::decode_body;

/// Generous: a 64 KiB body decodes in milliseconds.
const MAX_CASE_TIME: Duration = Duration::from_secs(2);
const MAX_INPUT: usize = 64 * 1024;

const YAML: &str = "application/yaml";
const APPLY: &str = "application/apply-patch+yaml";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    YAML,
    APPLY,
    PROTOBUF,
    "application/vnd.kubernetes.protobuf;stream=watch",
    "",
    "*/*",
    "text/plain",
    "application/cbor",
];

/// The most nodes (scalars, arrays, objects and keys) a body of `len` bytes may decode
/// into. Without aliases a document holds at most about one node per byte (`[a,a,a]`);
/// the base allows ordinary anchors in small documents (go-yaml lets about 400,000
/// aliased nodes through before it starts refusing). An alias bomb goes far past it.
fn max_nodes(len: usize) -> usize {
    4 * len + 1_000_000
}

/// Nodes of `v`, keys included: what decoding built in memory.
fn nodes(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nodes).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(|v| 1 + nodes(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Decodes one body and checks what every input must satisfy.
fn check(ct: &str, raw: &[u8]) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let res = decode_body(ct, raw);
    let took = start.elapsed();
    prop_assert!(
        took <= MAX_CASE_TIME,
        "decoding {} bytes as {ct:?} took {took:?}",
        raw.len()
    );
    match res {
        Err(e) => {
            prop_assert!(
                (400..500).contains(&e.code),
                "status {} for a client's body: {}",
                e.code,
                e.message
            );
            // Escaped echoes of the input may grow six-fold (`\u{1}`), nothing more.
            prop_assert!(
                e.message.len() <= 8 * 1024 + 6 * raw.len(),
                "error of {} bytes for a {}-byte body",
                e.message.len(),
                raw.len()
            );
        }
        Ok(body) => {
            let n = nodes(&body.value);
            prop_assert!(
                n <= max_nodes(raw.len()),
                "{}-byte {ct:?} body decoded into {n} nodes",
                raw.len()
            );
            prop_assert!(body.duplicates.len() <= raw.len());
        }
    }
    Ok(())
}

/// What `kubectl apply -f` sends, as JSON and as YAML (with an anchor, a block scalar, a
/// comment and a multi-line flow).
const DEPLOYMENT_JSON: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default","labels":{"app":"web"},"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"a\":\"\\u00e9\"}"}},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"terminationGracePeriodSeconds":30,"containers":[{"name":"nginx","image":"nginx:1.27","ports":[{"containerPort":80,"protocol":"TCP"}],"env":[{"name":"A","value":"1"}],"resources":{"limits":{"cpu":"500m","memory":"128Mi"}}}]}}}}"#;
const POD_YAML: &str = "apiVersion: v1
kind: Pod
metadata:
  name: p # a comment
  labels: &labels
    app: web
    tier: '1'
  annotations:
    note: |
      two
      lines
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c,
      'sleep 3600']
    env:
    - {name: X, value: \"0x1F\"}
    - name: Y
      value: !!str 2
  nodeSelector: *labels
  tolerations:
  - {key: k, operator: Exists, tolerationSeconds: 9223372036854775807}
";

/// Text that stresses a parser when spliced anywhere into a document.
const TOKENS: &[&str] = &[
    "",
    "[",
    "]",
    "{",
    "}",
    "{\"a\":",
    "\"a\":1,\"a\":2,",
    ",",
    ":",
    "\"",
    "\\",
    "\\uD800",
    "\\u0000",
    "\u{0}",
    "\u{feff}",
    "\u{fffd}",
    "1e999999",
    "-0",
    "123456789012345678901234567890123456789012345678901234567890",
    "0.000000000000000000000000000000000000000000000000000000001e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "NaN",
    "Infinity",
    "null",
    "true",
    "\n",
    "\t",
    "\r\n",
    "  ",
    "- ",
    "- - - - - - - - ",
    "? ",
    "&a ",
    "*a",
    "&a [x, x, x]",
    "[*a, *a, *a]",
    "<<: *a",
    "!!binary ",
    "!!int ",
    "!!float ",
    "!!map ",
    "!custom ",
    "!<tag:yaml.org,2002:str> ",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "|",
    ">-",
    "'",
    ".inf",
    ".nan",
    "~",
    "0x7FFFFFFFFFFFFFFFFF",
    "0o777",
    "k8s\u{0}",
];

/// A piece of text repeated, spliced over `len` bytes at `at` (both taken modulo the
/// document's length). A long run of `[` or `- ` is deep nesting; an empty token
/// truncates or cuts.
#[derive(Clone, Debug)]
struct Splice {
    at: usize,
    len: usize,
    token: &'static str,
    times: usize,
}

fn splice() -> impl Strategy<Value = Splice> {
    (
        any::<usize>(),
        prop_oneof![4 => 0usize..8, 1 => any::<usize>()],
        prop::sample::select(TOKENS),
        prop_oneof![8 => 1usize..4, 1 => 1usize..20_000],
    )
        .prop_map(|(at, len, token, times)| Splice {
            at,
            len,
            token,
            times,
        })
}

fn apply_splices(doc: &str, splices: &[Splice]) -> Vec<u8> {
    let mut body = doc.as_bytes().to_vec();
    for s in splices {
        let start = s.at % (body.len() + 1);
        let end = start + s.len % (body.len() - start + 1);
        let times = s
            .times
            .min(MAX_INPUT.saturating_sub(body.len()) / s.token.len().max(1));
        body.splice(start..end, s.token.repeat(times).into_bytes());
    }
    body.truncate(MAX_INPUT);
    body
}

/// Any JSON value, with edge numbers and strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 128, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(("[a-z$/.]{0,8}", inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A generated document in the syntax `ct` expects.
fn render(ct: &str, v: &Value) -> String {
    match ct {
        YAML | APPLY => serde_norway::to_string(v).unwrap_or_default(),
        _ => v.to_string(),
    }
}

/// The largest expansion the bombs below ask for: four times [`max_nodes`] of their size,
/// but small enough that a decoder without a bound fails these tests by size, not by
/// exhausting the machine's memory.
const MAX_BOMB: usize = 4_000_000;

/// `x: &a [x × n]` then `y: [*a × m]`: n×m nodes from about 3(n+m) bytes.
fn flat_bomb(n: usize, m: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b}}\nx: &a [{}]\ny: [{}]\n",
        vec!["x"; n].join(","),
        vec!["*a"; m].join(",")
    )
}

/// "Billion laughs": level i is a list of `fan` aliases of level i-1, fan^levels nodes.
fn laughs(fan: usize, levels: usize) -> String {
    let mut doc = format!("l0: &l0 [{}]\n", vec!["lol"; fan].join(","));
    for i in 1..=levels {
        let refs = vec![format!("*l{}", i - 1); fan].join(",");
        doc.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    doc
}

/// A mapping anchor with `keys` entries, aliased `m` times as values and merge keys.
fn map_bomb(keys: usize, m: usize) -> String {
    let entries: Vec<String> = (0..keys).map(|k| format!("k{k}: v")).collect();
    let refs: Vec<String> = (0..m).map(|i| format!("r{i}: {{<<: *a, v: *a}}")).collect();
    format!(
        "data: &a {{{}}}\nrefs: {{{}}}\n",
        entries.join(", "),
        refs.join(", ")
    )
}

/// Shrinking a failure replays the property many times: bounded, so a failing CI run
/// still ends in minutes.
const MAX_SHRINK_MS: u32 = 60_000;

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_time: MAX_SHRINK_MS, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(ct in prop::sample::select(CONTENT_TYPES), body in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(ct, &body)?;
    }

    #[test]
    fn arbitrary_content_type(ct in ".{0,64}", body in prop::sample::select(vec![DEPLOYMENT_JSON, POD_YAML, "k8s\0"])) {
        check(&ct, body.as_bytes())?;
    }

    #[test]
    fn spliced_manifests(
        ct in prop::sample::select(CONTENT_TYPES),
        yaml in any::<bool>(),
        splices in prop::collection::vec(splice(), 0..6),
    ) {
        let doc = if yaml { POD_YAML } else { DEPLOYMENT_JSON };
        check(ct, &apply_splices(doc, &splices))?;
    }

    #[test]
    fn spliced_random_documents(
        ct in prop::sample::select(CONTENT_TYPES),
        v in json_value(),
        splices in prop::collection::vec(splice(), 0..4),
    ) {
        let doc = render(ct, &v);
        if splices.is_empty() && ct != PROTOBUF {
            // Unspliced, the document is valid (unless it holds a float YAML cannot
            // round-trip), so this also checks the decoders accept what they should.
            let decoded = decode_body(ct, doc.as_bytes());
            prop_assert!(decoded.is_ok() || ct == "text/plain" || ct == "application/cbor" || ct.starts_with("application/vnd"));
        }
        check(ct, &apply_splices(&doc, &splices))?;
    }

    /// A body made only of hostile tokens: nesting, numbers, tags and aliases in any order.
    #[test]
    fn token_soup(
        ct in prop::sample::select(CONTENT_TYPES),
        splices in prop::collection::vec(splice(), 1..24),
    ) {
        check(ct, &apply_splices("", &splices))?;
    }
}

proptest! {
    // A big bomb takes ~150 ms to refuse in a debug build; an eighth of the cases
    // (32 by default) still covers the three shapes at every size.
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases / 8, max_shrink_time: MAX_SHRINK_MS, ..ProptestConfig::default() })]

    /// Alias bombs of three shapes, small (which must decode) to huge (which must be
    /// refused): either way within the node bound and the time bound.
    #[test]
    fn yaml_alias_bombs(
        ct in prop::sample::select(vec![YAML, APPLY]),
        shape in 0u8..3,
        a in 1usize..2000,
        b in 1usize..2000,
    ) {
        let doc = match shape {
            0 => flat_bomb(a, b),
            1 => {
                let fan = 2 + a % 11;
                let mut levels = 1 + (b % 24) as u32;
                while fan.checked_pow(levels).is_none_or(|n| n > MAX_BOMB) {
                    levels -= 1;
                }
                laughs(fan, levels as usize)
            }
            _ => map_bomb(a % 1000, b % 1000),
        };
        prop_assume!(doc.len() <= MAX_INPUT);
        check(ct, doc.as_bytes())?;
    }
}

/// The bombs above mean something only if a big one really is refused, and a small
/// document with anchors still decodes, aliases expanded.
#[test]
fn alias_bomb_is_refused_and_small_anchors_decode() {
    let doc = flat_bomb(2000, 2000);
    let start = Instant::now();
    let res = decode_body(YAML, doc.as_bytes());
    assert!(start.elapsed() < MAX_CASE_TIME);
    match res {
        Err(e) => assert_eq!(e.code, 400, "{}", e.message),
        Ok(b) => panic!("{} bytes decoded into {} nodes", doc.len(), nodes(&b.value)),
    }
    let small = decode_body(YAML, flat_bomb(3, 2).as_bytes()).expect("small anchors decode");
    assert_eq!(
        small.value["y"],
        serde_json::json!([["x", "x", "x"], ["x", "x", "x"]])
    );
    let pod = decode_body(APPLY, POD_YAML.as_bytes()).expect("pod decodes");
    assert_eq!(pod.value["spec"]["nodeSelector"]["tier"], "1");
}

//! Property tests ("fuzzing" that runs in `cargo test`) over the protobuf request decoder,
//! which sees every body a client sends as `application/vnd.kubernetes.protobuf`.
//!
//! For arbitrary bytes, for the real kubectl 1.32 bodies in `fixtures/` mutated byte-wise
//! (truncated, bytes flipped, runs inserted or repeated) or field-wise (edge values, fields
//! repeated, dropped, added, of the wrong wire type), for well-formed wire trees of random
//! shape under each supported kind, deep nesting and out-of-range timestamps, `decode` must
//! return (never panic) within [`MAX_CASE_TIME`], with an error or a value bounded by the
//! input's size.
//!
//! Bound, so that CI (`cargo test --workspace`) runs it every time: proptest's 256 cases per
//! property (an eighth of that for the costly ones), each case within [`MAX_CASE_TIME`] or
//! failed, a few seconds in all in a debug build. A longer local run:
//! `PROPTEST_CASES=100000 cargo test -p spindle-protobuf --test fuzz_decode`.
//! A failure prints the shrunk input: make it a regression unit test beside the fix.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use spindle_protobuf::{decode, DecodeError, MAGIC};

/// Generous: a 64 KiB body decodes in about a millisecond.
const MAX_CASE_TIME: Duration = Duration::from_secs(2);
const MAX_INPUT: usize = 64 * 1024;

const FIXTURES: &[&[u8]] = &[
    include_bytes!("fixtures/kubectl-1.32/create-clusterrole.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-clusterrolebinding.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-configmap.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-cronjob.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-deployment.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-job.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-namespace.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-pdb.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-quota.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-role.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-rolebinding.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-secret.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-service-clusterip.bin"),
    include_bytes!("fixtures/kubectl-1.32/create-serviceaccount.bin"),
    include_bytes!("fixtures/kubectl-1.32/drain-delete-options.bin"),
];

/// Every (apiVersion, kind) the decoder converts, so random `raw` reaches each converter.
const KINDS: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("v1", "ResourceQuota"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("policy/v1", "Eviction"),
    ("policy/v1beta1", "Eviction"),
    ("policy/v1", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("v1", "DeleteOptions"),
    ("v1", "Unheard"),
];

/// Decodes one body and checks what every input must satisfy.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let res = decode(body);
    let took = start.elapsed();
    prop_assert!(
        took <= MAX_CASE_TIME,
        "decoding {} bytes took {took:?}",
        body.len()
    );
    match res {
        // Debug-escaped strings from the envelope may grow six-fold (`\u{1}`); prost's
        // error names at most its 100 nested fields.
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.len() <= 8 * 1024 + 6 * body.len(),
                "error of {} bytes for a {}-byte body",
                msg.len(),
                body.len()
            );
        }
        // Empty repeated messages cost two bytes each on the wire and become `{}` or a few
        // defaulted fields in JSON, the same amplification as Go's decoder; nothing more.
        Ok(v) => {
            let out = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                out.len() <= 4096 + 64 * body.len(),
                "{}-byte body decoded to {} bytes of JSON",
                body.len(),
                out.len()
            );
        }
    }
    Ok(())
}

/// One protobuf field of a randomly shaped (but well-formed) wire message.
#[derive(Clone, Debug)]
enum Field {
    Varint(u32, u64),
    Fixed32(u32, u32),
    Fixed64(u32, u64),
    Bytes(u32, Vec<u8>),
    Message(u32, Vec<Field>),
    Group(u32, Vec<Field>),
}

fn encode(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        match f {
            Field::Varint(n, v) => {
                encode_key(*n, WireType::Varint, out);
                encode_varint(*v, out);
            }
            Field::Fixed32(n, v) => {
                encode_key(*n, WireType::ThirtyTwoBit, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Field::Fixed64(n, v) => {
                encode_key(*n, WireType::SixtyFourBit, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Field::Bytes(n, b) => {
                encode_key(*n, WireType::LengthDelimited, out);
                encode_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            Field::Message(n, inner) => {
                let mut buf = Vec::new();
                encode(inner, &mut buf);
                encode_key(*n, WireType::LengthDelimited, out);
                encode_varint(buf.len() as u64, out);
                out.extend_from_slice(&buf);
            }
            Field::Group(n, inner) => {
                encode_key(*n, WireType::StartGroup, out);
                encode(inner, out);
                encode_key(*n, WireType::EndGroup, out);
            }
        }
    }
}

/// Reads a message back into fields; a length-delimited field that parses as a message is
/// taken as one (a string that happens to parse re-encodes to the same bytes all the same).
fn parse(mut buf: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let (n, wire) = decode_key(&mut buf).ok()?;
        fields.push(match wire {
            WireType::Varint => Field::Varint(n, decode_varint(&mut buf).ok()?),
            WireType::ThirtyTwoBit => {
                let (v, rest) = buf.split_first_chunk::<4>()?;
                buf = rest;
                Field::Fixed32(n, u32::from_le_bytes(*v))
            }
            WireType::SixtyFourBit => {
                let (v, rest) = buf.split_first_chunk::<8>()?;
                buf = rest;
                Field::Fixed64(n, u64::from_le_bytes(*v))
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let inner = buf.get(..len)?;
                buf = &buf[len..];
                match parse(inner) {
                    Some(f) if !inner.is_empty() => Field::Message(n, f),
                    _ => Field::Bytes(n, inner.to_vec()),
                }
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        });
    }
    Some(fields)
}

/// Field-level edits of a real object, one tape entry per field visited (pre-order): the
/// shape stays that of a real kubectl body, so the converters see it, with edge values,
/// repeated fields many times over, fields dropped, added or of the wrong wire type.
fn edit_tree(fields: &mut Vec<Field>, tape: &mut std::slice::Iter<'_, (u8, u16)>) {
    let mut i = 0;
    while i < fields.len() {
        let Some(&(op, arg)) = tape.next() else {
            return;
        };
        let arg = usize::from(arg);
        let n = field_num(&fields[i]);
        // Most entries keep the field; most edits keep its wire type, or the message would
        // almost always fail at the first field and the converters would never run.
        match (op, &mut fields[i]) {
            (0..=15, Field::Varint(_, v)) => *v = EDGE_VARINTS[arg % EDGE_VARINTS.len()],
            (0..=15, Field::Bytes(_, b)) => *b = EDGE_STRINGS[arg % EDGE_STRINGS.len()].into(),
            (16..=23, _) => {
                let copy = fields[i].clone();
                let times = arg % 200;
                fields.splice(i..i, std::iter::repeat_n(copy, times));
                i += times;
            }
            (24..=27, _) => {
                fields.remove(i);
                continue;
            }
            (28..=29, _) => fields.insert(i, Field::Fixed64(n + 1000, arg as u64)),
            (30, _) => fields[i] = Field::Varint(n, arg as u64),
            (31, _) => fields[i] = Field::Group(n, Vec::new()),
            _ => {}
        }
        if let Field::Message(_, inner) | Field::Group(_, inner) = &mut fields[i] {
            edit_tree(inner, tape);
        }
        i += 1;
    }
}

fn field_num(f: &Field) -> u32 {
    match f {
        Field::Varint(n, _)
        | Field::Fixed32(n, _)
        | Field::Fixed64(n, _)
        | Field::Bytes(n, _)
        | Field::Message(n, _)
        | Field::Group(n, _) => *n,
    }
}

/// A `k8s\0` body around `raw`, written field by field as client-go does.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let type_meta = vec![
        Field::Bytes(1, api_version.as_bytes().to_vec()),
        Field::Bytes(2, kind.as_bytes().to_vec()),
    ];
    let unknown = [
        Field::Message(1, type_meta),
        Field::Bytes(2, raw),
        Field::Bytes(3, Vec::new()),
        Field::Bytes(4, Vec::new()),
    ];
    let mut body = MAGIC.to_vec();
    encode(&unknown, &mut body);
    body
}

/// Field numbers: mostly the low ones every generated.proto message uses, so nested
/// messages land on real fields (metadata = 1, spec = 2, …), sometimes unknown ones.
fn field_number() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..=16, 1 => 17u32..=200, 1 => Just(536_870_911u32)]
}

/// Values that sit at the edges of what the converters handle: Go's zero time and the
/// largest instants chrono and RFC 3339 take, the limits of i32/i64 (timestamps, ports,
/// replicas), negative numbers as varints.
const EDGE_VARINTS: &[u64] = &[
    0,
    1,
    u64::MAX,
    i64::MIN as u64,
    i64::MAX as u64,
    i32::MIN as i64 as u64,
    i32::MAX as u64,
    u32::MAX as u64,
    -62_135_596_800i64 as u64,
    253_402_300_800,
    8_210_266_876_799,
];

/// Strings that mean something to the converters (quantities, intstr, fieldsV1 JSON).
const EDGE_STRINGS: &[&str] = &[
    "",
    "0",
    "-1",
    "100m",
    "1Ei",
    "9999999999999999999Ei",
    "1e309",
    "v1",
    "Pod",
    "TCP",
    "{}",
    "[]",
    "{\"f:a\":{}}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "null",
    "\u{0}",
];

fn varint() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), prop::sample::select(EDGE_VARINTS)]
}

fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(EDGE_STRINGS).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn wire_tree() -> impl Strategy<Value = Vec<Field>> {
    let leaf = prop_oneof![
        (field_number(), varint()).prop_map(|(n, v)| Field::Varint(n, v)),
        (field_number(), any::<u32>()).prop_map(|(n, v)| Field::Fixed32(n, v)),
        (field_number(), any::<u64>()).prop_map(|(n, v)| Field::Fixed64(n, v)),
        (field_number(), wire_bytes()).prop_map(|(n, b)| Field::Bytes(n, b)),
    ];
    let field = leaf.prop_recursive(8, 256, 12, |inner| {
        let fields = prop::collection::vec(inner, 0..12);
        prop_oneof![
            6 => (field_number(), fields.clone()).prop_map(|(n, f)| Field::Message(n, f)),
            1 => (field_number(), fields).prop_map(|(n, f)| Field::Group(n, f)),
        ]
    });
    prop::collection::vec(field, 0..16)
}

/// One way of damaging a body; positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Repeat { at: usize, len: usize, times: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64, 1usize..512).prop_map(|(at, len, times)| Mutation::Repeat {
            at,
            len,
            times
        }),
    ]
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Truncate(i) => body.truncate(at(*i, body.len() + 1)),
        Mutation::Flip(i, x) => {
            if !body.is_empty() {
                let i = at(*i, body.len());
                body[i] ^= x;
            }
        }
        Mutation::Insert(i, b) => {
            let i = at(*i, body.len() + 1);
            body.splice(i..i, b.iter().copied());
        }
        Mutation::Repeat { at: i, len, times } => {
            let start = at(*i, body.len() + 1);
            let end = (start + len).min(body.len());
            let chunk = body[start..end].to_vec();
            for _ in 0..*times {
                if body.len() + chunk.len() > MAX_INPUT {
                    break;
                }
                body.splice(end..end, chunk.iter().copied());
            }
        }
    }
}

/// Shrinking a failure replays the property many times: bounded, so a failing CI run
/// still ends in minutes.
const MAX_SHRINK_MS: u32 = 60_000;

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_time: MAX_SHRINK_MS, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(mut body in prop::collection::vec(any::<u8>(), 0..4096), magic in any::<bool>()) {
        if magic {
            body.splice(0..0, MAGIC);
        }
        check(&body)?;
    }

    #[test]
    fn mutated_kubectl_bodies(
        fixture in prop::sample::select(FIXTURES),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut body = fixture.to_vec();
        for m in &mutations {
            mutate(&mut body, m);
        }
        check(&body)?;
    }

    #[test]
    fn edited_kubectl_objects(
        fixture in prop::sample::select(FIXTURES),
        tape in prop::collection::vec(any::<(u8, u16)>(), 1..400),
    ) {
        let mut fields = parse(&fixture[MAGIC.len()..]).expect("fixture parses");
        // Edit the object (`raw`, field 2 of the envelope), not the envelope.
        for f in &mut fields {
            if let Field::Message(2, object) = f {
                edit_tree(object, &mut tape.iter());
            }
        }
        let mut body = MAGIC.to_vec();
        encode(&fields, &mut body);
        prop_assume!(body.len() <= MAX_INPUT);
        check(&body)?;
    }

    #[test]
    fn random_wire_trees_of_each_kind(
        (api_version, kind) in prop::sample::select(KINDS),
        tree in wire_tree(),
    ) {
        let mut raw = Vec::new();
        encode(&tree, &mut raw);
        raw.truncate(MAX_INPUT);
        check(&envelope(api_version, kind, raw))?;
    }

    /// Timestamps from the wire go through chrono, whose constructors panic out of range.
    #[test]
    fn timestamps_at_any_instant(seconds in varint(), nanos in varint(), field in 8u32..=9) {
        let time = vec![Field::Varint(1, seconds), Field::Varint(2, nanos)];
        let metadata = vec![Field::Bytes(1, b"t".to_vec()), Field::Message(field, time)];
        check(&envelope("v1", "ConfigMap", {
            let mut raw = Vec::new();
            encode(&[Field::Message(1, metadata)], &mut raw);
            raw
        }))?;
    }

    /// Nesting deeper than prost's recursion limit (100), as groups (which prost skips
    /// recursively) and as length-delimited fields, known or unknown. Built as bytes: a
    /// `Field` tree this deep would overflow the test's own stack when dropped.
    #[test]
    fn deep_nesting(depth in 1usize..20_000, field in field_number(), group in any::<bool>(), kind in prop::sample::select(KINDS)) {
        let mut raw = Vec::new();
        if group {
            let (mut open, mut close) = (Vec::new(), Vec::new());
            encode_key(field, WireType::StartGroup, &mut open);
            encode_key(field, WireType::EndGroup, &mut close);
            let depth = depth.min(MAX_INPUT / (open.len() + close.len()));
            raw = open.repeat(depth);
            raw.extend(close.repeat(depth));
        } else {
            // Each level copies the levels below: keep it to a few thousand.
            for _ in 0..depth.min(3000) {
                let mut outer = Vec::new();
                encode_key(field, WireType::LengthDelimited, &mut outer);
                encode_varint(raw.len() as u64, &mut outer);
                outer.extend_from_slice(&raw);
                raw = outer;
            }
        }
        check(&envelope(kind.0, kind.1, raw))?;
    }

    /// A huge number of empty repeated messages (the cheapest amplification protobuf has).
    #[test]
    fn many_empty_messages(count in 0usize..30_000, field in 1u32..=16, kind in prop::sample::select(KINDS)) {
        let raw = vec![Field::Message(2, vec![Field::Message(field, Vec::new()); count])];
        let mut bytes = Vec::new();
        encode(&raw, &mut bytes);
        check(&envelope(kind.0, kind.1, bytes))?;
    }
}

/// The properties above only mean something if valid bodies still decode.
#[test]
fn fixtures_decode_before_mutation() {
    for body in FIXTURES {
        decode(body).expect("fixture decodes");
        let fields = parse(&body[MAGIC.len()..]).expect("fixture parses");
        assert!(matches!(fields.get(1), Some(Field::Message(2, _))));
        let mut again = MAGIC.to_vec();
        encode(&fields, &mut again);
        assert_eq!(&again, body, "parse and encode are inverse");
    }
    assert!(matches!(decode(b"k8s"), Err(DecodeError::MissingMagic)));
}

use super::*;

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn milli(s: &str) -> i64 {
    q(s).as_millis()
}

fn value(s: &str) -> i64 {
    q(s).value()
}

#[test]
fn plain_and_decimal() {
    assert_eq!(value("0"), 0);
    assert_eq!(value("128974848"), 128_974_848);
    assert_eq!(milli("1"), 1000);
    assert_eq!(milli("0.5"), 500);
    assert_eq!(milli("1.25"), 1250);
    assert_eq!(milli("+2"), 2000);
    assert_eq!(milli("-2"), -2000);
    assert_eq!(milli(".5"), 500);
}

#[test]
fn decimal_si_suffixes() {
    assert_eq!(milli("500m"), 500);
    assert_eq!(milli("250000u"), 250);
    assert_eq!(milli("1n"), 1, "rounds up to one millicore");
    assert_eq!(milli("100000000n"), 100);
    assert_eq!(value("129M"), 129_000_000);
    assert_eq!(value("1k"), 1000);
    assert_eq!(value("2G"), 2_000_000_000);
    assert_eq!(value("1T"), 1_000_000_000_000);
    assert_eq!(value("1P"), 1_000_000_000_000_000);
    assert_eq!(value("2E"), 2_000_000_000_000_000_000);
    assert_eq!(value("1500m"), 2, "value rounds up");
    assert_eq!(value("-1500m"), -2, "away from zero");
}

#[test]
fn binary_suffixes() {
    assert_eq!(value("1Ki"), 1024);
    assert_eq!(value("123Mi"), 123 * 1024 * 1024);
    assert_eq!(value("1.5Gi"), 1536 * 1024 * 1024);
    assert_eq!(value("1Ti"), 1 << 40);
    assert_eq!(value("1Pi"), 1 << 50);
    assert_eq!(value("1Ei"), 1 << 60);
    assert_eq!(value("64Ei"), i64::MAX, "saturates");
    assert_eq!(
        value("-64Ei"),
        -i64::MAX,
        "capped as apimachinery caps binary SI"
    );
}

#[test]
fn exponents() {
    assert_eq!(value("129e6"), 129_000_000);
    assert_eq!(value("1E3"), 1000);
    assert_eq!(milli("1e-3"), 1);
    assert_eq!(milli("5E-1"), 500);
    assert_eq!(value("12e+2"), 1200);
}

#[test]
fn rejects_garbage() {
    for bad in [
        "",
        "abc",
        "1x",
        "1.2.3",
        "Mi",
        "1e",
        "1e+",
        "1KiB",
        "--1",
        ".",
        " 1",
        "1 ",
        "1e99999999999",
    ] {
        assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn equal_and_ordered_by_value() {
    assert_eq!(q("1Gi"), q("1024Mi"));
    assert_eq!(q("1Gi"), q("1073741824"));
    assert_eq!(q("1"), q("1000m"));
    assert_eq!(q("1k"), q("1e3"));
    assert!(q("500m") < q("1"));
    assert!(q("1.5Gi") > q("1610612735"));
    assert!(q("1Pi") > q("1P"));
    assert!(q("-1") < q("0"));
    let mut set = std::collections::HashSet::new();
    set.insert(q("1Gi"));
    assert!(set.contains(&q("1024Mi")), "hash agrees with equality");
}

#[test]
fn parsing_rounds_up_to_nano_units() {
    assert_eq!(q("0.1n").as_nanos(), 1);
    assert_eq!(q("-0.1n").as_nanos(), -1);
    assert_eq!(q("1.0000000001").as_nanos(), 1_000_000_001);
    assert_eq!(
        q("0.0000000000000000000000000000000000000000001").as_nanos(),
        1
    );
    // Forty significant digits: the dropped ones still round the value up.
    assert_eq!(
        q("1.000000000000000000000000000000000000001").as_nanos(),
        1_000_000_001
    );
}

#[test]
fn saturates_instead_of_overflowing() {
    assert_eq!(
        value("99999999999999999999999999999999999999999999999"),
        i64::MAX
    );
    assert_eq!(value("1e40"), i64::MAX);
    assert_eq!(value("-1e40"), i64::MIN);
    assert_eq!(milli("9999999999999999"), i64::MAX);
    let big = q("1e40");
    assert_eq!(big.saturating_add(big).as_nanos(), i128::MAX);
    assert!(
        q("1e28") > q("1e27"),
        "values far beyond i64 still compare exactly"
    );
    assert_eq!(
        q("1e40"),
        q("1e41"),
        "beyond ~1.7e29 units every value is the same maximum"
    );
}

#[test]
fn arithmetic_keeps_the_left_format() {
    let sum = q("1Gi").saturating_add(q("512Mi"));
    assert_eq!(sum.to_string(), "1536Mi");
    assert_eq!(q("1").saturating_sub(q("250m")).to_string(), "750m");
    assert_eq!(Quantity::from_millis(1500).to_string(), "1500m");
    assert_eq!(
        Quantity::from_value(2048, Format::BinarySI).to_string(),
        "2Ki"
    );
}

#[test]
fn canonical_spelling() {
    for (input, canonical) in [
        ("0", "0"),
        ("1000m", "1"),
        ("0.5", "500m"),
        ("1500", "1500"),
        ("2000", "2k"),
        ("1.5G", "1500M"),
        ("1.5Gi", "1536Mi"),
        ("1024Ki", "1Mi"),
        ("1Ki", "1Ki"),
        ("512Ki", "512Ki"),
        ("0.5Ki", "512"),
        ("1.5Ki", "1536"),
        ("100Mi", "100Mi"),
        ("1e3", "1e3"),
        ("1500e-3", "1500e-3"),
        ("12e+2", "1200"),
        ("-2k", "-2k"),
        ("0.1n", "1n"),
        ("1e21", "1e21"),
        ("1000E", "1000E"),
    ] {
        assert_eq!(q(input).to_string(), canonical, "{input}");
    }
}

#[test]
fn json_form_is_a_string_or_a_number() {
    let from_text: Quantity = serde_json::from_str("\"1Gi\"").expect("string");
    assert_eq!(from_text, q("1Gi"));
    let from_int: Quantity = serde_json::from_str("5").expect("integer");
    assert_eq!(from_int, q("5"));
    let from_float: Quantity = serde_json::from_str("0.5").expect("float");
    assert_eq!(from_float.as_millis(), 500);
    assert!(serde_json::from_str::<Quantity>("\"1x\"").is_err());
    assert!(serde_json::from_str::<Quantity>("true").is_err());
    assert_eq!(
        serde_json::to_string(&q("1.5Gi")).expect("serialize"),
        "\"1536Mi\""
    );
}

#[test]
fn converts_with_the_openapi_type() {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Wire;
    let wire = Wire("250m".into());
    let exact = Quantity::try_from(&wire).expect("valid");
    assert_eq!(exact.as_millis(), 250);
    assert_eq!(Wire::from(exact), wire);
    assert!(Quantity::try_from(&Wire("lots".into())).is_err());
}

#[test]
fn nanocores_are_written_as_metrics_server_writes_them() {
    assert_eq!(Quantity::from_nanos(199_878_512).to_string(), "199878512n");
    assert_eq!(Quantity::from_nanos(200_000_000).to_string(), "200m");
    assert_eq!(Quantity::from_nanos(0).to_string(), "0");
    assert_eq!(
        Quantity::from_value(52_430_848, Format::BinarySI).to_string(),
        "51202Ki"
    );
}

use super::*;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
    }
}

fn web() -> BTreeMap<String, String> {
    labels(&[("app", "web"), ("tier", "front")])
}

#[test]
fn label_selector_needs_every_label_and_expression() {
    let sel = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![
            req("tier", "In", Some(&["front", "edge"])),
            req("canary", "DoesNotExist", None),
        ]),
    };
    let m = Matcher::from_label_selector(Some(&sel));
    assert!(m.matches(&web()));
    assert!(!m.matches(&labels(&[("app", "web"), ("tier", "back")])));
    assert!(!m.matches(&labels(&[
        ("app", "web"),
        ("tier", "front"),
        ("canary", "")
    ])));
    assert!(!m.matches(&labels(&[("tier", "front")])));
}

#[test]
fn each_operator() {
    let one = |r| {
        Matcher::from_label_selector(Some(&LabelSelector {
            match_expressions: Some(vec![r]),
            ..Default::default()
        }))
    };
    assert!(one(req("app", "In", Some(&["web"]))).matches(&web()));
    assert!(!one(req("app", "In", Some(&["db"]))).matches(&web()));
    assert!(one(req("app", "NotIn", Some(&["db"]))).matches(&web()));
    assert!(!one(req("app", "NotIn", Some(&["web"]))).matches(&web()));
    assert!(
        one(req("gone", "NotIn", Some(&["x"]))).matches(&web()),
        "NotIn holds for a missing key"
    );
    assert!(one(req("app", "Exists", None)).matches(&web()));
    assert!(!one(req("gone", "Exists", None)).matches(&web()));
    assert!(one(req("gone", "DoesNotExist", None)).matches(&web()));
    assert!(!one(req("app", "DoesNotExist", None)).matches(&web()));
}

#[test]
fn nil_selects_nothing_and_empty_everything() {
    assert!(!Matcher::from_label_selector(None).matches(&web()));
    assert!(Matcher::from_label_selector(None).selects_nothing());
    let empty = LabelSelector::default();
    assert!(is_empty(&empty));
    let m = Matcher::from_label_selector(Some(&empty));
    assert!(m.selects_all());
    assert!(m.matches(&web()));
    assert!(m.matches(&BTreeMap::new()));
    let empty_parts = LabelSelector {
        match_labels: Some(BTreeMap::new()),
        match_expressions: Some(vec![]),
    };
    assert!(is_empty(&empty_parts));
    assert!(!is_empty(&LabelSelector {
        match_labels: Some(labels(&[("a", "b")])),
        ..Default::default()
    }));
}

#[test]
fn malformed_requirements_are_errors_or_select_nothing() {
    for (r, want) in [
        (req("a", "In", None), SelectorError::NoValues),
        (req("a", "NotIn", Some(&[])), SelectorError::NoValues),
        (
            req("a", "Exists", Some(&["x"])),
            SelectorError::UnexpectedValues,
        ),
        (
            req("a", "Gt", Some(&["1"])),
            SelectorError::Operator("Gt".into()),
        ),
    ] {
        let sel = LabelSelector {
            match_expressions: Some(vec![r]),
            ..Default::default()
        };
        assert_eq!(Matcher::try_from_label_selector(Some(&sel)), Err(want));
        assert!(Matcher::from_label_selector(Some(&sel)).selects_nothing());
    }
}

#[test]
fn map_selectors_select_nothing_when_empty() {
    let m = Matcher::from_map(Some(&labels(&[("app", "web")])));
    assert!(m.matches(&web()));
    assert!(!m.matches(&labels(&[("app", "db")])));
    assert!(!Matcher::from_map(Some(&BTreeMap::new())).matches(&web()));
    assert!(!Matcher::from_map(None).matches(&web()));
}

#[test]
fn json_label_selectors() {
    let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "NotIn", "values": ["back"]}
    ]});
    let m = Matcher::try_from_json(Some(&sel)).expect("valid");
    assert!(m.matches_json(Some(&json!({"app": "web", "tier": "front"}))));
    assert!(!m.matches_json(Some(&json!({"app": "web", "tier": "back"}))));
    assert!(!m.matches_json(None));
    let all = Matcher::try_from_json(Some(&json!({}))).expect("empty is valid");
    assert!(
        all.matches_json(None),
        "an empty selector selects even an unlabelled object"
    );
    assert!(Matcher::try_from_json(Some(&Value::Null))
        .expect("null")
        .selects_nothing());
    assert!(Matcher::try_from_json(None)
        .expect("absent")
        .selects_nothing());
    assert!(matches!(
        Matcher::try_from_json(Some(&json!({"matchLabels": "app=web"}))),
        Err(SelectorError::Malformed(_))
    ));
    assert!(matches!(
        Matcher::try_from_json(Some(
            &json!({"matchExpressions": [{"key": "a", "operator": "In"}]})
        )),
        Err(SelectorError::NoValues)
    ));
}

#[test]
fn json_map_selectors() {
    let m = Matcher::from_json_map(Some(&json!({"app": "web"})));
    assert!(m.matches_json(Some(&json!({"app": "web", "x": "y"}))));
    assert!(!m.matches_json(Some(&json!({"app": 1}))));
    assert!(!Matcher::from_json_map(Some(&json!({}))).matches_json(Some(&json!({"a": "b"}))));
    assert!(
        !Matcher::from_json_map(Some(&json!({"app": 1}))).matches_json(Some(&json!({"app": 1})))
    );
    assert!(!Matcher::from_json_map(None).matches_json(Some(&json!({}))));
}

#[test]
fn extra_expressions_narrow_a_selector_but_not_nothing() {
    let m = Matcher::everything().with([Expression::NotEqual("app".into(), "web".into())]);
    assert!(!m.matches(&web()));
    assert!(m.matches(&labels(&[("app", "db")])));
    let none = Matcher::nothing().with([Expression::Exists("app".into())]);
    assert!(!none.matches(&web()));
    assert_eq!(
        Matcher::from_map(Some(&labels(&[("app", "web")])))
            .selector()
            .map(ToString::to_string),
        Some("app=web".to_string())
    );
}

#[test]
fn controllers_select_nothing_with_an_empty_selector() {
    let sel = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        ..Default::default()
    };
    assert!(Matcher::for_controller(Some(&sel)).matches(&web()));
    assert!(!Matcher::for_controller(Some(&LabelSelector::default())).matches(&web()));
    assert!(!Matcher::for_controller(None).matches(&web()));
}

#[test]
fn map_selects_agrees_with_the_matcher() {
    let sel = labels(&[("app", "web")]);
    let empty = BTreeMap::new();
    for selector in [Some(&sel), Some(&empty), None] {
        for l in [
            Some(web()),
            Some(labels(&[("app", "db")])),
            Some(empty.clone()),
            None,
        ] {
            let m = Matcher::from_map(selector);
            assert_eq!(
                map_selects(selector, l.as_ref()),
                m.matches(&l.clone().unwrap_or_default()),
                "{selector:?} on {l:?}"
            );
        }
    }
    assert!(map_selects(Some(&sel), Some(&web())));
}

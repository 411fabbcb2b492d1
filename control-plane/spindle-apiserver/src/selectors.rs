//! Label and field selectors as they arrive in `labelSelector=` / `fieldSelector=`.
//!
//! Hand-written because no maintained crate parses Kubernetes' selector grammar on the
//! server side (kube-core only builds selectors).

use serde_json::{Map, Value};

use spindle_api::Kind;

use crate::request::Query;
use crate::status::{ApiError, ApiResult};

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Split on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_set(rest: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            // apimachinery's parser names the token it found where "(" belongs.
            let found = rest
                .split(|c: char| c.is_whitespace() || "(),!=<>".contains(c))
                .next()
                .unwrap_or_default();
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{found}' expected: '('"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(k: &str, term: &str) -> Result<String, ApiError> {
    if k.is_empty() || !spindle_api::validation::is_qualified_name(k) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: {term}: invalid label key {k:?}"
        )));
    }
    Ok(k.to_string())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let t = term.as_str();
            let req = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(check_key(k.trim(), t)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::NotEq(check_key(k.trim(), t)?, v.trim().to_string())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(check_key(k.trim(), t)?, v.trim().to_string())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(check_key(k.trim(), t)?, v.trim().to_string())
            } else if let Some(pos) = t.find(" notin ") {
                Req::NotIn(check_key(t[..pos].trim(), t)?, parse_set(&t[pos + 7..])?)
            } else if let Some(pos) = t.find(" in ") {
                Req::In(check_key(t[..pos].trim(), t)?, parse_set(&t[pos + 4..])?)
            } else if let Some(pos) = t.find("notin(") {
                Req::NotIn(check_key(t[..pos].trim(), t)?, parse_set(&t[pos + 5..])?)
            } else if let Some(pos) = t.find("in(") {
                Req::In(check_key(t[..pos].trim(), t)?, parse_set(&t[pos + 2..])?)
            } else {
                Req::Exists(check_key(t, t)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|h| vs.iter().any(|v| v == h)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|h| vs.iter().any(|v| v == h)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse and check against the labels the kind supports.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for term in split_terms(s) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                )));
            };
            let k = k.trim();
            if !(k == "metadata.name" || k == "metadata.namespace" || allowed.contains(&k)) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The field paths the selector looks at (dotted, e.g. `spec.nodeName`).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _, _)| k.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let mut cur = Some(obj);
            for part in k.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                // Go's field sets render a missing field as "" (and a false bool as "false").
                _ if k == "spec.unschedulable" => "false".to_string(),
                _ => String::new(),
            };
            (actual == *v) == *eq
        })
    }
}

/// Field selectors that name exactly one object (`metadata.name=x`) let list and watch
/// skip everything else.
pub fn single_name(fs: &FieldSelector) -> Option<&str> {
    fs.0.iter()
        .find(|(k, eq, _)| k == "metadata.name" && *eq)
        .map(|(_, _, v)| v.as_str())
}

/// The label and field selectors of a list, watch or deletecollection request.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

pub fn selectors(kind: &Kind, q: &Query) -> ApiResult<Selectors> {
    Ok(Selectors {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), kind.field_labels)?,
    })
}

impl Selectors {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels
            .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
            && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web,db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (fe)", true),
            ("app=web,missing", false),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(Some(&l)),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn field_selector() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let allowed = ["spec.nodeName", "status.phase"];
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Succeeded", &allowed)
                .unwrap()
                .matches(&pod)
        );
        assert!(!FieldSelector::parse("metadata.name=q", &allowed)
            .unwrap()
            .matches(&pod));
        let e = FieldSelector::parse("spec.bogus=1", &allowed).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.bogus");
    }
}

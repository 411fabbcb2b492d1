//! Label selectors: one matcher for every place that selects objects by their labels.
//!
//! Matching itself is kube-core's [`Selector`] (a list of [`Expression`]s that must all
//! hold); [`Matcher`] adds what a selector *field* means, which differs by where it is
//! written, and reads the three shapes Spindle meets:
//!
//! | written as | absent (nil) | empty | used by |
//! |---|---|---|---|
//! | `LabelSelector` (matchLabels + matchExpressions) | selects nothing | selects everything | PodDisruptionBudget, pod affinity, topology spread, NetworkPolicy |
//! | plain map (`spec.selector: {app: web}`) | selects nothing | selects nothing | Service, ReplicationController |
//! | untyped JSON of either | as above | as above | the API server, before a typed object exists |
//!
//! These are apimachinery's rules: `metav1.LabelSelectorAsSelector` turns nil into
//! `labels.Nothing()` and an empty selector into `labels.Everything()`, and the endpoints
//! and replication controllers skip an object with no selector. Controllers that own
//! pods through a LabelSelector (ReplicaSet, Deployment) additionally refuse to act on an
//! empty one rather than adopt a whole namespace: [`Matcher::for_controller`].
//!
//! The API server's query-string selectors (`?labelSelector=a in (b)`) are parsed where
//! the requests are handled, in spindle-apiserver.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::Value;

pub use kube::core::{Expression, Selector, SelectorExt};

/// Why a LabelSelector cannot be turned into a matcher (apimachinery's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{0:?} is not a valid label selector operator")]
    Operator(String),
    #[error("for 'in', 'notin' operators, values set can't be empty")]
    NoValues,
    #[error("values set must be empty for exists and does not exist")]
    UnexpectedValues,
    #[error("invalid label selector: {0}")]
    Malformed(String),
}

/// A label selector ready to match: everything its expressions accept, or nothing at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher(Option<Selector>);

impl Matcher {
    /// Selects no object (a nil selector).
    pub fn nothing() -> Matcher {
        Matcher(None)
    }

    /// Selects every object (an empty LabelSelector).
    pub fn everything() -> Matcher {
        Matcher(Some(Selector::default()))
    }

    /// `metav1.LabelSelectorAsSelector`: nil selects nothing, empty selects everything,
    /// and a malformed requirement is an error.
    pub fn try_from_label_selector(sel: Option<&LabelSelector>) -> Result<Matcher, SelectorError> {
        let Some(sel) = sel else {
            return Ok(Matcher::nothing());
        };
        let mut selector: Selector = sel.match_labels.iter().flatten().map(equal).collect();
        let exprs = sel.match_expressions.iter().flatten();
        selector.extend(exprs.map(expression).collect::<Result<Vec<_>, _>>()?);
        Ok(Matcher(Some(selector)))
    }

    /// As [`Matcher::try_from_label_selector`], for a caller that can only skip a bad
    /// selector: a malformed one selects nothing (what a controller does after logging).
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Matcher {
        Matcher::try_from_label_selector(sel).unwrap_or_else(|_| Matcher::nothing())
    }

    /// The selector of a controller that owns what it selects (ReplicaSet, Deployment,
    /// StatefulSet): absent, empty or malformed selects nothing, because such a
    /// controller refuses to adopt a whole namespace.
    pub fn for_controller(sel: Option<&LabelSelector>) -> Matcher {
        match sel {
            Some(s) if !is_empty(s) => Matcher::from_label_selector(Some(s)),
            _ => Matcher::nothing(),
        }
    }

    /// A Service or ReplicationController selector: `key: value` pairs that must all
    /// match; absent or empty selects nothing.
    pub fn from_map(map: Option<&BTreeMap<String, String>>) -> Matcher {
        match map {
            Some(m) if !m.is_empty() => Matcher(Some(m.iter().map(equal).collect())),
            _ => Matcher::nothing(),
        }
    }

    /// A LabelSelector as untyped JSON (`{"matchLabels": …, "matchExpressions": […]}`),
    /// with the same rules as [`Matcher::try_from_label_selector`]; JSON `null` is absent.
    pub fn try_from_json(sel: Option<&Value>) -> Result<Matcher, SelectorError> {
        let sel: LabelSelector = match sel {
            None | Some(Value::Null) => return Ok(Matcher::nothing()),
            Some(v) => serde::Deserialize::deserialize(v)
                .map_err(|e: serde_json::Error| SelectorError::Malformed(e.to_string()))?,
        };
        Matcher::try_from_label_selector(Some(&sel))
    }

    /// A Service/ReplicationController selector map as untyped JSON; absent, empty or
    /// not a map of strings selects nothing.
    pub fn from_json_map(map: Option<&Value>) -> Matcher {
        Matcher::from_map(map.and_then(string_map).as_ref())
    }

    /// Also require `exprs` (no effect on a matcher that selects nothing).
    pub fn with(mut self, exprs: impl IntoIterator<Item = Expression>) -> Matcher {
        if let Some(s) = self.0.as_mut() {
            s.extend(exprs);
        }
        self
    }

    /// Does it select an object with these labels?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Does it select an object whose `metadata.labels` is this JSON (absent: none)?
    pub fn matches_json(&self, labels: Option<&Value>) -> bool {
        let Some(s) = self.0.as_ref() else {
            return false;
        };
        if s.selects_all() {
            return true;
        }
        s.matches(&labels.and_then(string_map).unwrap_or_default())
    }

    /// Selects every object.
    pub fn selects_all(&self) -> bool {
        self.0.as_ref().is_some_and(Selector::selects_all)
    }

    /// Selects no object.
    pub fn selects_nothing(&self) -> bool {
        self.0.is_none()
    }

    /// The kube-core selector, to send as a list's `labelSelector` (None: select nothing,
    /// so there is nothing to list).
    pub fn selector(&self) -> Option<&Selector> {
        self.0.as_ref()
    }
}

/// A LabelSelector with neither matchLabels nor matchExpressions.
pub fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// `Matcher::from_map(selector).matches(labels)` without building a matcher, for hot
/// loops over Services (absent or empty selects nothing; absent labels are none).
pub fn map_selects(
    selector: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector.is_some_and(|sel| {
        !sel.is_empty()
            && sel
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    })
}

fn equal((k, v): (&String, &String)) -> Expression {
    Expression::Equal(k.clone(), v.clone())
}

fn expression(r: &LabelSelectorRequirement) -> Result<Expression, SelectorError> {
    let values: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
    let key = r.key.clone();
    match r.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(SelectorError::NoValues),
        "In" => Ok(Expression::In(key, values)),
        "NotIn" => Ok(Expression::NotIn(key, values)),
        "Exists" | "DoesNotExist" if !values.is_empty() => Err(SelectorError::UnexpectedValues),
        "Exists" => Ok(Expression::Exists(key)),
        "DoesNotExist" => Ok(Expression::DoesNotExist(key)),
        other => Err(SelectorError::Operator(other.to_string())),
    }
}

/// A JSON object of string values as a label map; `None` if it is anything else.
fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests;

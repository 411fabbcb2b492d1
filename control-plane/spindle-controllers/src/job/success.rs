//! An Indexed Job's successPolicy, as kube-controller-manager matches it: the Job has
//! succeeded once the first rule is met, whose `succeededIndexes` all succeeded (or at
//! least `succeededCount` of them), or, without indexes, once `succeededCount` indexes
//! did. The Job then gets SuccessCriteriaMet (reason SuccessPolicy), its remaining pods
//! are stopped, and it becomes Complete.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::SuccessPolicy;

use super::indexes;

pub const REASON: &str = "SuccessPolicy";

/// The message of the first rule `succeeded` meets, if any.
pub fn matching(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    if succeeded.is_empty() {
        return None;
    }
    let met = |i: usize| Some(format!("Matched rules at index {i}"));
    for (i, rule) in policy?.rules.iter().enumerate() {
        let want_count = rule.succeeded_count.map(|c| c.max(0) as usize);
        match rule.succeeded_indexes.as_deref() {
            Some(list) => {
                let wanted = indexes::parse(Some(list), completions);
                // A list that names no valid index never matches.
                if wanted.is_empty() {
                    continue;
                }
                let done = wanted.intersection(succeeded).count();
                if done == wanted.len() || want_count.is_some_and(|c| done >= c) {
                    return met(i);
                }
            }
            None if want_count.is_some_and(|c| succeeded.len() >= c) => return met(i),
            None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::SuccessPolicyRule;

    fn rule(indexes: Option<&str>, count: Option<i32>) -> SuccessPolicyRule {
        SuccessPolicyRule {
            succeeded_indexes: indexes.map(Into::into),
            succeeded_count: count,
        }
    }

    #[test]
    fn the_first_met_rule_is_named() {
        let policy = SuccessPolicy {
            rules: vec![
                rule(Some("0,4-6"), None),
                rule(Some("1-3"), Some(2)),
                rule(None, Some(4)),
            ],
        };
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        let m = |s: &[i32]| matching(Some(&policy), 8, &set(s));
        assert_eq!(m(&[]), None);
        assert_eq!(m(&[0, 4, 5]), None);
        assert_eq!(m(&[0, 4, 5, 6]), Some("Matched rules at index 0".into()));
        assert_eq!(m(&[1, 3]), Some("Matched rules at index 1".into()));
        assert_eq!(m(&[1, 7, 0, 5]), Some("Matched rules at index 2".into()));
        assert_eq!(matching(None, 8, &set(&[0, 1, 2])), None);
    }
}

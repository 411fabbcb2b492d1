//! A Job's podFailurePolicy, as kube-controller-manager applies it to a failed pod: the
//! first rule whose exit codes (of a terminated container, init containers after the
//! others; exit code 0 never matches) or pod conditions match decides what the failure
//! means. FailJob ends the Job, FailIndex ends the pod's index (backoffLimitPerIndex),
//! Ignore leaves it out of every failure count, Count (or no match) counts it as usual.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The Job fails, with this message in its FailureTarget and Failed conditions.
    FailJob(String),
    FailIndex,
    Ignore,
    Count,
}

impl Action {
    /// Whether the failure counts toward backoffLimit (and an index's failure count).
    pub fn counts(&self) -> bool {
        *self != Action::Ignore
    }
}

/// What the policy makes of failed pod `p`; None when no rule matches (the failure
/// counts) or there is no policy.
pub fn matching(policy: Option<&PodFailurePolicy>, p: &Pod) -> Option<Action> {
    let status = p.status.as_ref()?;
    for (i, rule) in policy?.rules.iter().enumerate() {
        let why = if let Some(req) = &rule.on_exit_codes {
            let statuses = status.container_statuses.iter().flatten();
            let inits = status.init_container_statuses.iter().flatten();
            let Some((name, code)) = statuses.chain(inits).find_map(|c| exit_match(c, req)) else {
                continue;
            };
            format!(
                "Container {name} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                p.namespace().unwrap_or_default(),
                p.name_any(),
                rule.action
            )
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let Some(ty) = condition_match(p, patterns) else {
                continue;
            };
            format!(
                "Pod {}/{} has condition {ty} matching {} rule at index {i}",
                p.namespace().unwrap_or_default(),
                p.name_any(),
                rule.action
            )
        } else {
            continue;
        };
        return match rule.action.as_str() {
            "FailJob" => Some(Action::FailJob(why)),
            "FailIndex" => Some(Action::FailIndex),
            "Ignore" => Some(Action::Ignore),
            "Count" => Some(Action::Count),
            // Validation admits no other; a rule it cannot act on is skipped.
            _ => continue,
        };
    }
    None
}

/// Whether the failure of `p` counts (it matched no Ignore rule).
pub fn counts(policy: Option<&PodFailurePolicy>, p: &Pod) -> bool {
    matching(policy, p).is_none_or(|a| a.counts())
}

fn exit_match(
    c: &ContainerStatus,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
    if code == 0 || req.container_name.as_ref().is_some_and(|n| *n != c.name) {
        return None;
    }
    let listed = req.values.contains(&code);
    let hit = match req.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    };
    hit.then(|| (c.name.clone(), code))
}

fn condition_match(p: &Pod, patterns: &[PodFailurePolicyOnPodConditionsPattern]) -> Option<String> {
    let conds = p.status.as_ref()?.conditions.as_ref()?;
    conds.iter().find_map(|c| {
        patterns
            .iter()
            .any(|pat| pat.type_ == c.type_ && pat.status == c.status)
            .then(|| c.type_.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::PodFailurePolicyRule;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };
    use kube::api::ObjectMeta;

    fn failed(exits: &[(&str, i32)], inits: &[(&str, i32)], conds: &[(&str, &str)]) -> Pod {
        let statuses = |list: &[(&str, i32)]| {
            list.iter()
                .map(|(n, code)| ContainerStatus {
                    name: (*n).into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: *code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(statuses(exits)),
                init_container_statuses: Some(statuses(inits)),
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| PodCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn on_exit(
        action: &str,
        container: Option<&str>,
        op: &str,
        values: &[i32],
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(Into::into),
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    fn on_cond(action: &str, ty: &str) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: ty.into(),
                status: "True".into(),
            }]),
        }
    }

    fn policy(rules: Vec<PodFailurePolicyRule>) -> PodFailurePolicy {
        PodFailurePolicy { rules }
    }

    #[test]
    fn the_first_matching_rule_decides_with_kubes_message() {
        let p = policy(vec![
            on_exit("Ignore", None, "In", &[1]),
            on_exit("FailJob", None, "In", &[42]),
            on_exit("Count", None, "NotIn", &[7]),
        ]);
        assert_eq!(
            matching(Some(&p), &failed(&[("main", 42)], &[], &[])),
            Some(Action::FailJob(
                "Container main for pod default/x failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            ))
        );
        assert_eq!(
            matching(Some(&p), &failed(&[("main", 1)], &[], &[])),
            Some(Action::Ignore)
        );
        assert_eq!(
            matching(Some(&p), &failed(&[("main", 3)], &[], &[])),
            Some(Action::Count)
        );
        // NotIn [7] with 7: nothing matches, the failure counts as usual.
        let seven = failed(&[("main", 7)], &[], &[]);
        assert_eq!(matching(Some(&p), &seven), None);
        assert!(counts(Some(&p), &seven));
        assert!(!counts(Some(&p), &failed(&[("main", 1)], &[], &[])));
        assert_eq!(matching(None, &seven), None);
    }

    #[test]
    fn exit_code_zero_never_matches_and_container_names_restrict() {
        let p = policy(vec![on_exit("FailJob", Some("side"), "NotIn", &[5])]);
        // main exited 9 but the rule names side; side exited 0, which never matches.
        assert_eq!(
            matching(Some(&p), &failed(&[("main", 9), ("side", 0)], &[], &[])),
            None
        );
        let hit = matching(Some(&p), &failed(&[("main", 9), ("side", 9)], &[], &[]));
        assert!(matches!(hit, Some(Action::FailJob(m)) if m.starts_with("Container side ")));
        // Init containers are looked at too.
        let init = policy(vec![on_exit("FailIndex", None, "In", &[2])]);
        assert_eq!(
            matching(Some(&init), &failed(&[], &[("setup", 2)], &[])),
            Some(Action::FailIndex)
        );
    }

    #[test]
    fn pod_conditions_match_on_type_and_status() {
        let p = policy(vec![
            on_cond("Ignore", "DisruptionTarget"),
            on_cond("FailJob", "Custom"),
        ]);
        assert_eq!(
            matching(
                Some(&p),
                &failed(&[("main", 1)], &[], &[("DisruptionTarget", "True")])
            ),
            Some(Action::Ignore)
        );
        assert_eq!(
            matching(
                Some(&p),
                &failed(&[], &[], &[("DisruptionTarget", "False")])
            ),
            None
        );
        assert_eq!(
            matching(Some(&p), &failed(&[], &[], &[("Custom", "True")])),
            Some(Action::FailJob(
                "Pod default/x has condition Custom matching FailJob rule at index 1".into()
            ))
        );
    }
}

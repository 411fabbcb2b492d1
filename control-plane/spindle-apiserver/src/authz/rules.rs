//! Policy rules: whether one allows a request (kube's `rbac.RuleAllows`), and whether a
//! set of rules covers another (kube's `validation.Covers`, for escalation checks).

use serde::{Deserialize, Serialize};

use super::attributes::Attributes;

/// rbac/v1 PolicyRule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == want)
}

fn has_or_all(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl PolicyRule {
    /// Whether the rule allows the request (kube's RuleAllows).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has_or_all(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.url_matches(&a.path);
        }
        has_or_all(&self.api_groups, &a.group)
            && self.resource_matches(&a.resource, a.subresource.as_str())
            && (self.resource_names.is_empty() || has(&self.resource_names, &a.name))
    }

    /// `resource`, `resource/subresource`, `*`, or `*/subresource`.
    fn resource_matches(&self, resource: &str, sub: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if sub.is_empty() {
                return r == resource;
            }
            r.strip_prefix(resource)
                .and_then(|t| t.strip_prefix('/'))
                .is_some_and(|t| t == sub)
                || r.strip_prefix("*/").is_some_and(|t| t == sub)
        })
    }

    /// An exact path, `*`, or a prefix ending in `*`.
    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        })
    }

    /// Whether this rule alone covers all of `other` (kube's ruleCovers), for rules
    /// broken down to one verb, group, resource and name each.
    fn covers(&self, other: &PolicyRule) -> bool {
        let verbs = other.verbs.iter().all(|v| has_or_all(&self.verbs, v));
        let urls = other.non_resource_urls.iter().all(|u| {
            self.non_resource_urls.iter().any(|o| {
                o == "*" || o == u || o.strip_suffix('*').is_some_and(|p| u.starts_with(p))
            })
        });
        let groups = other
            .api_groups
            .iter()
            .all(|g| has_or_all(&self.api_groups, g));
        let resources = other.resources.iter().all(|r| {
            self.resources.iter().any(|o| {
                o == "*"
                    || o == r
                    || (o.starts_with("*/") && r.split_once('/').is_some_and(|(_, s)| o[2..] == *s))
            })
        });
        let names = if other.resource_names.is_empty() {
            self.resource_names.is_empty()
        } else {
            self.resource_names.is_empty()
                || other
                    .resource_names
                    .iter()
                    .all(|n| has(&self.resource_names, n))
        };
        verbs && urls && groups && resources && names
    }

    /// One rule per verb, group, resource (and name), or per verb and URL (kube's
    /// BreakdownRule).
    fn breakdown(&self) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        let one = |v: &str| vec![v.to_string()];
        for g in &self.api_groups {
            for r in &self.resources {
                for v in &self.verbs {
                    if self.resource_names.is_empty() {
                        out.push(PolicyRule {
                            verbs: one(v),
                            api_groups: one(g),
                            resources: one(r),
                            ..PolicyRule::default()
                        });
                    }
                    for n in &self.resource_names {
                        out.push(PolicyRule {
                            verbs: one(v),
                            api_groups: one(g),
                            resources: one(r),
                            resource_names: one(n),
                            ..PolicyRule::default()
                        });
                    }
                }
            }
        }
        for u in &self.non_resource_urls {
            for v in &self.verbs {
                out.push(PolicyRule {
                    verbs: one(v),
                    non_resource_urls: one(u),
                    ..PolicyRule::default()
                });
            }
        }
        out
    }

    /// kube's CompactString: `{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let q = |l: &[String]| {
            let parts: Vec<String> = l.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", parts.join(" "))
        };
        let mut parts = Vec::new();
        for (name, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{name}:{}", q(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// The rules of `servant` that no rule of `owner` covers, each broken down to one verb,
/// then compacted (one rule per group and resource with its verbs, as kube's
/// CompactRules), in kube's order (sorted by their compact strings).
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing: Vec<PolicyRule> = Vec::new();
    for rule in servant {
        for atom in rule.breakdown() {
            if owner.iter().any(|o| o.covers(&atom)) {
                continue;
            }
            let simple = atom.resource_names.is_empty() && atom.non_resource_urls.is_empty();
            let same = missing.iter().position(|m| {
                simple
                    && m.resource_names.is_empty()
                    && m.non_resource_urls.is_empty()
                    && m.api_groups == atom.api_groups
                    && m.resources == atom.resources
            });
            match same {
                Some(i) if !has(&missing[i].verbs, &atom.verbs[0]) => {
                    missing[i].verbs.push(atom.verbs[0].clone());
                }
                Some(_) => {}
                None if !missing.contains(&atom) => missing.push(atom),
                None => {}
            }
        }
    }
    missing.sort_by_key(PolicyRule::compact_string);
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            resource_names: v(names),
            ..PolicyRule::default()
        }
    }

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            resource_request: true,
            ..Attributes::default()
        }
    }

    #[test]
    fn verbs_groups_resources_and_names_match_as_kubernetes() {
        let pods = rule(&["get", "list"], &[""], &["pods"], &[]);
        assert!(pods.allows(&attrs("get", "", "pods", "", "x")));
        assert!(pods.allows(&attrs("list", "", "pods", "", "")));
        assert!(!pods.allows(&attrs("delete", "", "pods", "", "x")));
        assert!(!pods.allows(&attrs("get", "apps", "pods", "", "x")));
        assert!(!pods.allows(&attrs("get", "", "secrets", "", "x")));
        // A subresource is its own resource: pods does not grant pods/log.
        assert!(!pods.allows(&attrs("get", "", "pods", "log", "x")));
        let log = rule(&["get"], &[""], &["pods/log"], &[]);
        assert!(log.allows(&attrs("get", "", "pods", "log", "x")));
        assert!(!log.allows(&attrs("get", "", "pods", "", "x")));
        let any_status = rule(&["update"], &["*"], &["*/status"], &[]);
        assert!(any_status.allows(&attrs("update", "apps", "deployments", "status", "d")));
        assert!(!any_status.allows(&attrs("update", "apps", "deployments", "scale", "d")));
        let all = rule(&["*"], &["*"], &["*"], &[]);
        assert!(all.allows(&attrs("deletecollection", "batch", "jobs", "", "")));
        let named = rule(&["get"], &[""], &["configmaps"], &["cfg"]);
        assert!(named.allows(&attrs("get", "", "configmaps", "", "cfg")));
        assert!(!named.allows(&attrs("get", "", "configmaps", "", "other")));
        assert!(!named.allows(&attrs("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_prefix() {
        let r = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/apis/*".into()],
            ..PolicyRule::default()
        };
        let url = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Attributes::default()
        };
        assert!(r.allows(&url("/healthz")));
        assert!(r.allows(&url("/apis/apps/v1")));
        assert!(!r.allows(&url("/apis")));
        assert!(!r.allows(&url("/metrics")));
        // A resource rule never grants a path.
        assert!(!rule(&["*"], &["*"], &["*"], &[]).allows(&url("/healthz")));
    }

    #[test]
    fn escalation_lists_what_the_owner_lacks_in_kubes_words() {
        let owner = [rule(&["get", "list"], &[""], &["pods"], &[])];
        assert!(uncovered(&owner, &[rule(&["get"], &[""], &["pods"], &[])]).is_empty());
        assert!(uncovered(&owner, &[rule(&["get"], &[""], &["pods"], &["a"])]).is_empty());
        let missing = uncovered(
            &owner,
            &[rule(
                &["get", "list", "delete"],
                &[""],
                &["pods", "secrets"],
                &[],
            )],
        );
        let text: Vec<String> = missing.iter().map(PolicyRule::compact_string).collect();
        assert_eq!(
            text,
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list" "delete"]}"#,
            ]
        );
        // A named grant does not cover the whole resource.
        let named = [rule(&["get"], &[""], &["pods"], &["a"])];
        assert_eq!(
            uncovered(&named, &[rule(&["get"], &[""], &["pods"], &[])]).len(),
            1
        );
        let star = [rule(&["*"], &["*"], &["*"], &[])];
        assert!(uncovered(
            &star,
            &[rule(&["get"], &["apps"], &["deployments/scale"], &[])]
        )
        .is_empty());
    }
}

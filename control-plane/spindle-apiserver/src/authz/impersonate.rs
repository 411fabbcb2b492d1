//! Impersonation (`kubectl --as`, `--as-group`): kube-apiserver's WithImpersonation. The
//! caller must be allowed the `impersonate` verb on each thing it asks to be: users,
//! groups, ServiceAccounts, uids and user extras.

use axum::http::{HeaderMap, HeaderName};

use super::attributes::{forbidden_error, Attributes};
use super::index::SA_PREFIX;
use super::AUTHENTICATED;
use crate::auth::User;
use crate::status::ApiError;
use crate::AppState;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

fn check(st: &AppState, caller: &User, a: Attributes) -> Result<(), ApiError> {
    let d = st.authz.authorize(caller, &a);
    if d.allowed {
        return Ok(());
    }
    let mut err = a.forbidden_message(&caller.name);
    if !d.reason.is_empty() {
        err = format!("{err}: {}", d.reason);
    }
    Err(forbidden_error(&a.group, &a.resource, &a.name, &err))
}

fn impersonate(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

/// The user the request acts as, when it asks to impersonate one (the headers are then
/// removed, as kube-apiserver does); `None` when it does not ask.
pub(super) fn resolve(
    st: &AppState,
    caller: &User,
    headers: &mut HeaderMap,
) -> Result<Option<User>, ApiError> {
    let values = |h: &HeaderMap, name: &str| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let users = values(headers, USER);
    let groups = values(headers, GROUP);
    let uid = values(headers, UID);
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix(EXTRA)?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    if users.is_empty() && groups.is_empty() && uid.is_empty() && extras.is_empty() {
        return Ok(None);
    }
    let Some(name) = users.first().filter(|u| !u.is_empty()).cloned() else {
        let mut asked: Vec<String> = groups.iter().map(|g| format!("groups={g}")).collect();
        asked.extend(extras.iter().map(|(k, v)| format!("extra.{k}={v}")));
        asked.extend(uid.iter().map(|u| format!("uid={u}")));
        return Err(ApiError::bad_request(format!(
            "requested [{}] without impersonating a user",
            asked.join(" ")
        )));
    };
    let mut new_groups = groups.clone();
    match name.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
        Some((ns, sa)) => {
            check(st, caller, impersonate("", "serviceaccounts", "", ns, sa))?;
            if groups.is_empty() {
                new_groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => check(st, caller, impersonate("", "users", "", "", &name))?,
    }
    for g in &groups {
        check(st, caller, impersonate("", "groups", "", "", g))?;
    }
    for (k, v) in &extras {
        check(
            st,
            caller,
            impersonate("authentication.k8s.io", "userextras", k, "", v),
        )?;
    }
    for u in &uid {
        check(
            st,
            caller,
            impersonate("authentication.k8s.io", "uids", "", "", u),
        )?;
    }
    if name != "system:anonymous"
        && !new_groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == "system:unauthenticated")
    {
        new_groups.push(AUTHENTICATED.into());
    }
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for k in drop {
        headers.remove(k);
    }
    Ok(Some(User {
        name,
        groups: new_groups,
    }))
}

//! What a REST request is about: the kind (from the registry), namespace, name,
//! subresource and query options, parsed once for the generic handlers.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use serde_json::Value;
use spindle_api::{Kind, Registry};

use crate::status::{ApiError, ApiResult};

#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// The segments of a URL path, percent-decoded, without leading or trailing slashes:
/// the one reading of a path that routing, authorization and the metrics API share.
pub fn path_segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Parse `/api/v1/...` or `/apis/<group>/<version>/...` into a [`Target`]. Returns
/// `Ok(None)` for paths that are not resource paths (discovery documents).
pub fn parse_path(reg: &Registry, path: &str) -> ApiResult<Option<Target>> {
    let segs = path_segments(path);
    let (group, version, rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 2 => ("", segs[1].as_str(), &segs[2..]),
        Some("apis") if segs.len() >= 3 => (segs[1].as_str(), segs[2].as_str(), &segs[3..]),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    // Inside a served group-version a miss is the router's 404, which kube-apiserver
    // words like any other but sends with (empty) details.
    let not_found = if reg.group_versions().contains(&(group, version)) {
        ApiError::route_not_found
    } else {
        ApiError::path_not_found
    };
    let find = |plural: &str| reg.by_resource(group, version, plural).cloned();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let t = match r.as_slice() {
        ["namespaces", ns, plural, tail @ ..]
            if reg
                .by_resource(group, version, plural)
                .is_some_and(|k| k.namespaced) =>
        {
            let kind = find(plural).ok_or_else(not_found)?;
            match tail {
                [] => Target {
                    kind,
                    namespace: Some(ns.to_string()),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    kind,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, sub] => Target {
                    kind,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                },
                _ => return Err(not_found()),
            }
        }
        [plural, tail @ ..] => {
            let kind = find(plural).ok_or_else(not_found)?;
            match tail {
                [] => Target {
                    kind,
                    namespace: None,
                    name: None,
                    sub: None,
                },
                [name] if !kind.namespaced => Target {
                    kind,
                    namespace: None,
                    name: Some(name.to_string()),
                    sub: None,
                },
                [name, sub] if !kind.namespaced => Target {
                    kind,
                    namespace: None,
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                },
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    };
    Ok(Some(t))
}

/// Query options of a request.
#[derive(Clone, Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

/// The decoded body of a write, plus duplicate fields found in the raw text (for
/// strict field validation, since JSON maps keep only the last duplicate).
pub struct Body {
    pub value: Value,
    pub duplicates: Vec<String>,
}

pub fn decode_body(ct: &str, raw: &[u8]) -> ApiResult<Body> {
    let mime = ct.split(';').next().unwrap_or("").trim();
    if spindle_protobuf::is_protobuf(ct) {
        let value =
            spindle_protobuf::decode(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return Ok(Body {
            value,
            duplicates: Vec::new(),
        });
    }
    match mime {
        "application/yaml" | "application/apply-patch+yaml" => {
            let value: Value = crate::yaml::from_slice(raw).map_err(|e| {
                let msg = e.to_string();
                if msg.contains("duplicate") {
                    ApiError::bad_request(format!("strict decoding error: {msg}"))
                } else {
                    ApiError::bad_request(format!("error decoding YAML: {msg}"))
                }
            })?;
            Ok(Body {
                value,
                duplicates: Vec::new(),
            })
        }
        "application/json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json"
        | ""
        | "*/*" => {
            let value: Value = serde_json::from_slice(raw)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?;
            let duplicates = spindle_api::fields::duplicate_json_fields(raw);
            Ok(Body { value, duplicates })
        }
        other => Err(ApiError::unsupported_media(other)),
    }
}

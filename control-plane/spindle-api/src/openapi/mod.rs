//! OpenAPI documents generated from the registry: the `/openapi/v3` root, one OpenAPI 3.0
//! document per group-version, and the swagger 2.0 document as gnostic protobuf for
//! `/openapi/v2`.
//!
//! kubectl reads these for three things: `kubectl explain` (real schemas with
//! descriptions, found through `x-kubernetes-group-version-kind`), the decision to leave
//! field validation to the server (a `fieldValidation` query parameter on the kind's PATCH
//! operation), and strategic-merge-patch metadata in client-side apply. Everything is built
//! once at startup; the schemas come from k8s-openapi's schemars impls, so they carry the
//! upstream names and descriptions.
//!
//! [`schemas`] builds the definitions, [`paths`] describes each kind's operations once,
//! and [`v3`] and [`v2`] render them; [`gnostic`] encodes the swagger document.

pub mod gnostic;
mod paths;
mod schemas;
#[cfg(test)]
mod tests;
mod v2;
mod v3;

use std::collections::HashMap;

use prost::Message;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use crate::Registry;
use paths::kind_paths;
use schemas::{annotate_lists, closure, gvk, list_name, list_schema};
pub(crate) use schemas::{for_each_subschema, generate, ref_name};
use v2::{to_v2_schema, v2_path_item};
use v3::v3_paths;

pub(crate) const V3_REF: &str = "#/components/schemas/";
pub(crate) const V2_REF: &str = "#/definitions/";
pub(crate) const GVK_EXT: &str = "x-kubernetes-group-version-kind";
pub(crate) const ACTION_EXT: &str = "x-kubernetes-action";
pub(crate) const PATCH_STRATEGY_EXT: &str = "x-kubernetes-patch-strategy";
pub(crate) const PATCH_MERGE_KEY_EXT: &str = "x-kubernetes-patch-merge-key";
pub(crate) const LIST_TYPE_EXT: &str = "x-kubernetes-list-type";
pub(crate) const LIST_MAP_KEYS_EXT: &str = "x-kubernetes-list-map-keys";
/// How many fields deep the list annotation walk goes; recursive schemas (JSONSchemaProps)
/// are also cut off at the first repeated definition.
pub(crate) const MAX_FIELD_DEPTH: usize = 32;
pub(crate) const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";
/// Advertised in `info.version`; kubectl only displays it.
pub(crate) const API_VERSION: &str = "v1.33.0";

/// The precomputed documents. Built once; handlers only borrow from it.
pub struct OpenApi {
    v3_root: Value,
    v3_docs: HashMap<String, Value>,
    v2: Vec<u8>,
    v2_etag: String,
}

impl OpenApi {
    pub fn new(reg: &Registry) -> OpenApi {
        let kinds = reg.kinds();
        let mut defs = generate(kinds.iter(), true);
        let mut names: HashMap<(&str, &str, &str), (String, String)> = HashMap::new();
        for k in kinds {
            let item = (k.schema_name)();
            if let Some(Value::Object(o)) = defs.get_mut(&item) {
                o.insert(GVK_EXT.into(), json!([gvk(k.group, k.version, k.kind)]));
            }
            let list = list_name(k, &item);
            defs.insert(list.clone(), list_schema(k, &item));
            names.insert((k.group, k.version, k.kind), (item, list));
        }
        // Before anything is hashed or serialized: both documents carry the annotations.
        let roots: Vec<String> = kinds.iter().map(|k| (k.schema_name)()).collect();
        annotate_lists(&mut defs, &roots);

        let mut root_paths = Map::new();
        let mut v3_docs = HashMap::new();
        let mut v2_paths = Map::new();
        for (group, version) in reg.group_versions() {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let mut specs = Vec::new();
            let mut roots: Vec<String> = ["Status", "DeleteOptions", "Patch", "ListMeta"]
                .iter()
                .map(|n| format!("{META}{n}"))
                .collect();
            for k in reg.kinds_in(group, version) {
                let Some((item, list)) = names.get(&(k.group, k.version, k.kind)) else {
                    continue;
                };
                specs.extend(kind_paths(k, item, list));
                roots.push(item.clone());
                roots.push(list.clone());
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": API_VERSION},
                "paths": v3_paths(&specs),
                "components": {"schemas": closure(&defs, roots)},
            });
            // Serializing a Value with string keys cannot fail.
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let hash = hex::encode_upper(Sha512::digest(&bytes));
            root_paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
            );
            v3_docs.insert(key, doc);
            for spec in &specs {
                v2_paths.insert(spec.path.clone(), v2_path_item(spec));
            }
        }

        let v2_defs: Map<String, Value> = defs
            .iter()
            .map(|(name, schema)| {
                let mut s = schema.clone();
                to_v2_schema(&mut s);
                (name.clone(), s)
            })
            .collect();
        let swagger = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": API_VERSION},
            "paths": v2_paths,
            "definitions": v2_defs,
        });
        let v2 = gnostic::document(&swagger).encode_to_vec();
        // kube-apiserver uses the SHA-512 of the body as a strong (quoted) ETag.
        let v2_etag = format!("\"{}\"", hex::encode_upper(Sha512::digest(&v2)));
        OpenApi {
            v3_root: json!({ "paths": root_paths }),
            v3_docs,
            v2,
            v2_etag,
        }
    }

    /// `GET /openapi/v3`: one `serverRelativeURL` per group-version, with the document's
    /// hash as cache key.
    pub fn v3_root(&self) -> &Value {
        &self.v3_root
    }

    /// `GET /openapi/v3/<path>` where `path` is `api/v1` or `apis/<group>/<version>`
    /// (a leading `/` and a `?hash=` query are tolerated).
    pub fn v3_group_version(&self, path: &str) -> Option<&Value> {
        let path = path.split('?').next().unwrap_or(path).trim_matches('/');
        self.v3_docs.get(path)
    }

    /// `GET /openapi/v2`: gnostic `openapi.v2.Document` protobuf; serve with
    /// `Content-Type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf`.
    pub fn v2_protobuf(&self) -> &[u8] {
        &self.v2
    }

    /// Quoted strong ETag of [`Self::v2_protobuf`].
    pub fn v2_etag(&self) -> &str {
        &self.v2_etag
    }
}

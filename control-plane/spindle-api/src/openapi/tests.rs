//! The documents kubectl reads, checked for what it reads from them.

use std::collections::HashSet;

use prost::Message;
use serde_json::{json, Value};

use super::gnostic::*;
use super::paths::*;
use super::schemas::*;
use super::*;

fn api() -> OpenApi {
    OpenApi::new(&Registry::new())
}

fn all_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => all_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| all_refs(x, out)),
        _ => {}
    }
}

#[test]
fn v3_root_lists_group_versions_with_hash() {
    let api = api();
    let paths = &api.v3_root()["paths"];
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/coordination.k8s.io/v1",
        "apis/discovery.k8s.io/v1",
    ] {
        let url = paths[gv]["serverRelativeURL"].as_str().unwrap_or_default();
        assert!(
            url.starts_with(&format!("/openapi/v3/{gv}?hash=")),
            "{gv}: {url}"
        );
        assert!(api.v3_group_version(gv).is_some());
        assert!(api.v3_group_version(&url["/openapi/v3/".len()..]).is_some());
    }
    assert!(api.v3_group_version("apis/nope/v1").is_none());
}

#[test]
fn v3_apps_doc_supports_explain() {
    let api = api();
    let doc = api.v3_group_version("apis/apps/v1").expect("apps/v1 doc");
    assert_eq!(doc["openapi"], "3.0.0");
    let schemas = &doc["components"]["schemas"];
    let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deploy[GVK_EXT],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert!(deploy["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let spec_ref = deploy["properties"]["spec"]["allOf"][0]["$ref"]
        .as_str()
        .expect("spec allOf ref");
    let spec = &schemas[spec_ref.trim_start_matches(V3_REF)];
    assert_eq!(spec["properties"]["replicas"]["type"], "integer");
    assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
    assert_eq!(
        schemas["io.k8s.api.apps.v1.DeploymentList"][GVK_EXT][0]["kind"],
        "DeploymentList"
    );
    // Core types live in the core doc, but apps needs PodSpec to explain templates.
    assert!(schemas["io.k8s.api.core.v1.PodSpec"].is_object());

    let mut refs = Vec::new();
    all_refs(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix(V3_REF)
            .unwrap_or_else(|| panic!("bad ref {r}"));
        assert!(schemas[name].is_object(), "dangling {r}");
    }
}

#[test]
fn v3_patch_operation_advertises_field_validation() {
    let api = api();
    let doc = api.v3_group_version("apis/apps/v1").expect("apps/v1 doc");
    for path in [
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
    ] {
        let patch = &doc["paths"][path]["patch"];
        assert_eq!(
            patch[GVK_EXT],
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        let params = patch["parameters"].as_array().expect("parameters");
        let fv = params
            .iter()
            .find(|p| p["name"] == "fieldValidation")
            .expect("fieldValidation");
        assert_eq!(fv["in"], "query");
        assert_eq!(fv["schema"], json!({"type": "string", "uniqueItems": true}));
        for p in ["dryRun", "fieldManager", "force"] {
            assert!(params.iter().any(|x| x["name"] == p), "{p}");
        }
        let content = patch["requestBody"]["content"]
            .as_object()
            .expect("content");
        for t in PATCH_TYPES {
            assert!(content.contains_key(*t), "{t}");
        }
        assert_eq!(
            patch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.Deployment"
        );
    }
    let core = api.v3_group_version("api/v1").expect("core doc");
    assert!(core["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
    assert!(core["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"].is_object());
}

#[test]
fn v3_lists_carry_patch_metadata() {
    let api = api();
    let apps = api.v3_group_version("apis/apps/v1").expect("apps/v1 doc");
    let schemas = &apps["components"]["schemas"];
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers[PATCH_STRATEGY_EXT], "merge");
    assert_eq!(containers[PATCH_MERGE_KEY_EXT], "name");
    assert_eq!(containers[LIST_TYPE_EXT], "map");
    assert_eq!(containers[LIST_MAP_KEYS_EXT], json!(["name"]));
    let container = &schemas["io.k8s.api.core.v1.Container"]["properties"];
    assert_eq!(container["env"][PATCH_MERGE_KEY_EXT], "name");
    assert_eq!(container["volumeMounts"][PATCH_MERGE_KEY_EXT], "mountPath");
    assert_eq!(container["ports"][PATCH_MERGE_KEY_EXT], "containerPort");
    assert_eq!(
        container["ports"][LIST_MAP_KEYS_EXT],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(container["args"][LIST_TYPE_EXT], "atomic");
    assert!(container["args"].get(PATCH_STRATEGY_EXT).is_none());
    let meta = &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
    assert_eq!(meta["finalizers"][PATCH_STRATEGY_EXT], "merge");
    assert_eq!(meta["finalizers"][LIST_TYPE_EXT], "set");
    assert_eq!(meta["ownerReferences"][PATCH_MERGE_KEY_EXT], "uid");

    let core = api.v3_group_version("api/v1").expect("core doc");
    let schemas = &core["components"]["schemas"];
    let ports = &schemas["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
    assert_eq!(ports[PATCH_STRATEGY_EXT], "merge");
    assert_eq!(ports[PATCH_MERGE_KEY_EXT], "port");
    assert_eq!(ports[LIST_MAP_KEYS_EXT], json!(["port", "protocol"]));
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"][PATCH_MERGE_KEY_EXT],
        "name"
    );
}

#[test]
fn v2_lists_carry_patch_metadata() {
    let doc = v2_doc(&api());
    let defs = doc.definitions.expect("definitions").additional_properties;
    let prop = |def: &str, prop: &str| -> Schema {
        defs.iter()
            .find(|d| d.name == def)
            .and_then(|d| d.value.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.additional_properties.iter().find(|p| p.name == prop))
            .and_then(|p| p.value.clone())
            .unwrap_or_else(|| panic!("{def}.{prop}"))
    };
    let ext = |s: &Schema, name: &str| -> Option<String> {
        s.vendor_extension
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_ref())
            .map(|a| a.yaml.clone())
    };
    let containers = prop("io.k8s.api.core.v1.PodSpec", "containers");
    assert_eq!(
        ext(&containers, PATCH_STRATEGY_EXT).as_deref(),
        Some("merge\n")
    );
    assert_eq!(
        ext(&containers, PATCH_MERGE_KEY_EXT).as_deref(),
        Some("name\n")
    );
    assert_eq!(ext(&containers, LIST_TYPE_EXT).as_deref(), Some("map\n"));
    assert_eq!(
        ext(&containers, LIST_MAP_KEYS_EXT).as_deref(),
        Some("- name\n")
    );
    let ports = prop("io.k8s.api.core.v1.Container", "ports");
    assert_eq!(
        ext(&ports, LIST_MAP_KEYS_EXT).as_deref(),
        Some("- containerPort\n- protocol\n")
    );
    let ports = prop("io.k8s.api.core.v1.ServiceSpec", "ports");
    assert_eq!(ext(&ports, PATCH_MERGE_KEY_EXT).as_deref(), Some("port\n"));
    let finalizers = prop(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
    );
    assert_eq!(
        ext(&finalizers, PATCH_STRATEGY_EXT).as_deref(),
        Some("merge\n")
    );
    assert_eq!(ext(&finalizers, LIST_TYPE_EXT).as_deref(), Some("set\n"));
}

/// The length-delimited fields of one protobuf message, by field number, read with the
/// wire format alone: an independent reader, so a wrong tag in our prost types cannot
/// hide behind decoding with the same types.
fn wire_fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let skip = match key & 7 {
            0 => {
                varint(&mut b);
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(&mut b)).expect("length");
                out.push((key >> 3, &b[..len]));
                len
            }
            5 => 4,
            t => panic!("wire type {t}"),
        };
        b = &b[skip..];
    }
    out
}

/// The fields numbered `tag` of a message.
fn wire_field(b: &[u8], tag: u64) -> Vec<&[u8]> {
    wire_fields(b)
        .into_iter()
        .filter(|(t, _)| *t == tag)
        .map(|(_, v)| v)
        .collect()
}

/// The served swagger document read by gnostic's published field numbers
/// (openapiv2/OpenAPIv2.proto), the way kubectl's generated Go types read it: the
/// Deployment definition is found with its type and its group-version-kind extension.
#[test]
fn v2_bytes_follow_gnostic_field_numbers() {
    let api = api();
    let doc = api.v2_protobuf();
    // Document: swagger = 1, paths = 8, definitions = 9.
    assert_eq!(wire_field(doc, 1), [b"2.0".as_slice()]);
    assert_eq!(wire_field(doc, 8).len(), 1, "paths");
    let defs = wire_field(doc, 9);
    assert_eq!(defs.len(), 1, "definitions");
    // Definitions: additional_properties = 1 (NamedSchema: name = 1, value = 2).
    let deployment = wire_field(defs[0], 1)
        .into_iter()
        .find(|named| wire_field(named, 1) == [b"io.k8s.api.apps.v1.Deployment".as_slice()])
        .expect("Deployment definition");
    let schema = wire_field(deployment, 2);
    assert_eq!(schema.len(), 1);
    // Schema: type = 22 (TypeItem: value = 1), properties = 25, vendor_extension = 31.
    let ty = wire_field(schema[0], 22);
    assert_eq!(wire_field(ty[0], 1), [b"object".as_slice()]);
    assert_eq!(wire_field(schema[0], 25).len(), 1, "properties");
    // NamedAny: name = 1, value = 2 (Any: yaml = 2).
    let gvk = wire_field(schema[0], 31)
        .into_iter()
        .find(|ext| wire_field(ext, 1) == [GVK_EXT.as_bytes()])
        .expect("group-version-kind extension");
    let any = wire_field(gvk, 2);
    let yaml = String::from_utf8(wire_field(any[0], 2)[0].to_vec()).expect("utf-8");
    assert_eq!(yaml, "- group: apps\n  kind: Deployment\n  version: v1\n");
    // The known-good minimal answer kubectl accepts.
    let minimal = Document {
        swagger: "2.0".into(),
        ..Default::default()
    };
    assert_eq!(minimal.encode_to_vec(), [0x0a, 0x03, b'2', b'.', b'0']);
}

#[test]
fn yaml_of_gvk() {
    assert_eq!(
        to_yaml(&json!([gvk("apps", "v1", "Deployment")])),
        "- group: apps\n  kind: Deployment\n  version: v1\n"
    );
    assert_eq!(
        to_yaml(&gvk("", "v1", "Pod")),
        "group: ''\nkind: Pod\nversion: v1\n"
    );
    assert_eq!(
        to_yaml(&json!({"a": [1, {"b": "x"}], "c": {}})),
        "a:\n- 1\n- b: x\nc: {}\n"
    );
    // Strings a YAML 1.1 reader (go-yaml v2, kubectl's) would take for booleans, numbers
    // or dates go as JSON.
    assert_eq!(
        to_yaml(&json!({"a": [1, {"b": "yes"}]})),
        "{\"a\":[1,{\"b\":\"yes\"}]}\n"
    );
    for s in ["Off", "n", "1_000", "2001-12-14"] {
        assert_eq!(to_yaml(&json!(s)), format!("\"{s}\"\n"));
    }
    assert_eq!(to_yaml(&json!("yesterday")), "yesterday\n");
}

/// Every vendor extension in the swagger document parses as YAML.
#[test]
fn v2_extensions_read_back_as_json() {
    fn check(exts: &[NamedAny], seen: &mut usize) {
        for e in exts {
            let yaml = e.value.as_ref().map(|a| a.yaml.as_str()).unwrap_or("");
            let back: Result<Value, _> = serde_norway::from_str(yaml);
            assert!(back.is_ok(), "{}: {yaml}", e.name);
            *seen += 1;
        }
    }
    let doc = v2_doc(&api());
    let mut seen = 0;
    for def in doc
        .definitions
        .iter()
        .flat_map(|d| &d.additional_properties)
    {
        if let Some(s) = &def.value {
            check(&s.vendor_extension, &mut seen);
        }
    }
    assert!(seen > 20, "only {seen} extensions");
    let gvk_yaml = doc
        .definitions
        .iter()
        .flat_map(|d| &d.additional_properties)
        .find(|d| d.name == "io.k8s.api.core.v1.Pod")
        .and_then(|d| d.value.as_ref())
        .and_then(|s| s.vendor_extension.iter().find(|e| e.name == GVK_EXT))
        .and_then(|e| e.value.as_ref())
        .map(|a| a.yaml.clone())
        .unwrap_or_default();
    assert_eq!(gvk_yaml, "- group: ''\n  kind: Pod\n  version: v1\n");
}

fn v2_doc(api: &OpenApi) -> Document {
    Document::decode(api.v2_protobuf()).expect("v2 decodes")
}

#[test]
fn v2_document_has_definitions_and_patch_parameters() {
    let api = api();
    let bytes = api.v2_protobuf();
    assert_eq!(&bytes[..5], &[0x0a, 0x03, b'2', b'.', b'0']);
    assert!(api.v2_etag().starts_with('"') && api.v2_etag().len() == 130);
    let doc = v2_doc(&api);
    assert_eq!(doc.swagger, "2.0");

    let defs = doc.definitions.expect("definitions").additional_properties;
    let names: HashSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let deploy = defs
        .iter()
        .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
        .and_then(|d| d.value.as_ref());
    let deploy = deploy.expect("Deployment definition");
    let ext = deploy
        .vendor_extension
        .iter()
        .find(|e| e.name == GVK_EXT)
        .expect("gvk");
    assert_eq!(
        ext.value.as_ref().map(|a| a.yaml.as_str()),
        Some("- group: apps\n  kind: Deployment\n  version: v1\n")
    );
    let props = &deploy
        .properties
        .as_ref()
        .expect("properties")
        .additional_properties;
    let spec = props
        .iter()
        .find(|p| p.name == "spec")
        .and_then(|p| p.value.as_ref())
        .expect("spec");
    assert_eq!(
        spec.r#ref,
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    );
    assert!(!spec.description.is_empty());

    // Every reference resolves, or kube-openapi's parser rejects the whole document.
    fn refs(s: &Schema, out: &mut Vec<String>) {
        if !s.r#ref.is_empty() {
            out.push(s.r#ref.clone());
        }
        for p in s.properties.iter().flat_map(|p| &p.additional_properties) {
            p.value.iter().for_each(|v| refs(v, out));
        }
        s.items
            .iter()
            .flat_map(|i| &i.schema)
            .for_each(|v| refs(v, out));
        s.all_of.iter().for_each(|v| refs(v, out));
        if let Some(additional_properties_item::Oneof::Schema(a)) = s
            .additional_properties
            .as_ref()
            .and_then(|a| a.oneof.as_ref())
        {
            refs(a, out);
        }
    }
    let mut all = Vec::new();
    defs.iter()
        .filter_map(|d| d.value.as_ref())
        .for_each(|s| refs(s, &mut all));
    for r in all {
        let name = r
            .strip_prefix(V2_REF)
            .unwrap_or_else(|| panic!("bad ref {r}"));
        assert!(names.contains(name), "dangling {r}");
    }

    let paths = doc.paths.expect("paths").path;
    let item = paths
        .iter()
        .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .and_then(|p| p.value.as_ref())
        .expect("deployment item path");
    let patch = item.patch.as_ref().expect("patch");
    let gvk_yaml = patch
        .vendor_extension
        .iter()
        .find(|e| e.name == GVK_EXT)
        .and_then(|e| e.value.as_ref());
    assert_eq!(
        gvk_yaml.map(|a| a.yaml.as_str()),
        Some("group: apps\nkind: Deployment\nversion: v1\n")
    );
    let has_fv = patch.parameters.iter().any(|p| match &p.oneof {
        Some(parameters_item::Oneof::Parameter(p)) => match &p.oneof {
            Some(parameter::Oneof::NonBodyParameter(NonBodyParameter {
                oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(q)),
            })) => q.name == "fieldValidation" && q.r#in == "query",
            _ => false,
        },
        _ => false,
    });
    assert!(has_fv);
    assert!(patch
        .consumes
        .iter()
        .any(|c| c == "application/strategic-merge-patch+json"));
}

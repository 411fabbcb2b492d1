use serde_json::{json, Map, Value};

use super::paths::{param_info, response_description, PathSpec};
use super::*;

/// Swagger 2.0 form: `#/definitions/` refs, and the single-`$ref` `allOf` wrapper undone
/// (kube-openapi's v2 parser does not follow `allOf`; upstream swagger.json puts the
/// description next to `$ref`).
pub(super) fn to_v2_schema(s: &mut Value) {
    let Some(obj) = s.as_object_mut() else { return };
    let single_ref = match obj.get("allOf") {
        Some(Value::Array(all)) if all.len() == 1 => all[0]
            .get("$ref")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    if let Some(r) = single_ref {
        obj.remove("allOf");
        obj.insert("$ref".into(), json!(r));
    }
    if let Some(Value::String(r)) = obj.get_mut("$ref") {
        *r = format!("{V2_REF}{}", ref_name(r));
    }
    for_each_subschema(obj, &mut to_v2_schema);
}

// ---------------------------------------------------------------------------------------
// List patch metadata

pub(super) fn v2_path_item(spec: &PathSpec) -> Value {
    let mut item = Map::new();
    for op in &spec.ops {
        let mut parameters: Vec<Value> = Vec::new();
        if let Some((schema, _)) = &op.body {
            parameters.push(json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("{V2_REF}{schema}")}}));
        }
        for q in op.query {
            let (ty, desc) = param_info(q);
            parameters.push(json!({"uniqueItems": true, "type": ty, "description": desc, "name": q, "in": "query"}));
        }
        let mut responses = Map::new();
        for (code, schema) in &op.responses {
            responses.insert(
                code.to_string(),
                json!({"description": response_description(code), "schema": {"$ref": format!("{V2_REF}{schema}")}}),
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        let mut o = json!({
            "description": op.description,
            "produces": op.produces,
            "schemes": ["https"],
            "operationId": op.id,
            "parameters": parameters,
            "responses": responses,
            ACTION_EXT: op.action,
            GVK_EXT: op.gvk,
        });
        if let Some((_, types)) = &op.body {
            o["consumes"] = json!(types);
        }
        item.insert(op.method.into(), o);
    }
    let params: Vec<Value> = spec
        .params
        .iter()
        .map(|p| {
            let (ty, desc) = param_info(p);
            json!({"uniqueItems": true, "type": ty, "description": desc, "name": p, "in": "path", "required": true})
        })
        .collect();
    if !params.is_empty() {
        item.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(item)
}

use serde_json::{json, Map, Value};

use super::paths::{param_info, response_description, PathSpec};
use super::*;

pub(super) fn v3_paths(specs: &[PathSpec]) -> Value {
    let mut paths = Map::new();
    for spec in specs {
        let mut item = Map::new();
        let params: Vec<Value> = spec
            .params
            .iter()
            .map(|p| {
                let (ty, desc) = param_info(p);
                json!({"name": p, "in": "path", "description": desc, "required": true, "schema": {"type": ty, "uniqueItems": true}})
            })
            .collect();
        if !params.is_empty() {
            item.insert("parameters".into(), Value::Array(params));
        }
        for op in &spec.ops {
            let parameters: Vec<Value> = op
                .query
                .iter()
                .map(|q| {
                    let (ty, desc) = param_info(q);
                    json!({"name": q, "in": "query", "description": desc, "schema": {"type": ty, "uniqueItems": true}})
                })
                .collect();
            let mut o = json!({
                "description": op.description,
                "operationId": op.id,
                "parameters": parameters,
            });
            if let Some((schema, types)) = &op.body {
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({"schema": {"$ref": format!("{V3_REF}{schema}")}}),
                        )
                    })
                    .collect();
                o["requestBody"] = json!({"content": content, "required": true});
            }
            let mut responses = Map::new();
            for (code, schema) in &op.responses {
                let content: Map<String, Value> = op
                    .produces
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({"schema": {"$ref": format!("{V3_REF}{schema}")}}),
                        )
                    })
                    .collect();
                responses.insert(
                    code.to_string(),
                    json!({"description": response_description(code), "content": content}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            o["responses"] = Value::Object(responses);
            o[ACTION_EXT] = json!(op.action);
            o[GVK_EXT] = op.gvk.clone();
            item.insert(op.method.into(), o);
        }
        paths.insert(spec.path.clone(), Value::Object(item));
    }
    Value::Object(paths)
}

//! The OpenAPI 3.0 document of the send API, served at `/openapi.json` (docs/api.md says the
//! same in prose).

use serde_json::{Value, json};

/// The document of a job's door (`tidings gateway`).
pub fn document() -> Value {
    let param = json!({
        "type": "object",
        "properties": {
            "bizId": {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "the caller's own id, returned and tracked (a whole number is read as its text)"},
            "receiver": {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "receivers, comma-separated, 1 to 100 (a whole number is read as its text)"},
            "variables": {"type": "object", "additionalProperties": true,
                "description": "placeholder values (strings, numbers, booleans)"},
            "extra": {"type": "object", "additionalProperties": true}
        },
        "required": ["receiver"]
    });
    let answer = json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "example": "0",
                "description": "austin's codes: 0 accepted; A0001 refused at the door; A0002 template unknown or disabled; A0003 more than 100 receivers; A0401 token; A0429 rate; B0001 broker"},
            "msg": {"type": "string", "example": "操作成功"},
            "data": {"type": "array", "nullable": true, "items": {"$ref": "#/components/schemas/SimpleTaskInfo"},
                "description": "one per message; null on a refusal and for a recall"}
        },
        "required": ["code", "msg"]
    });
    let responses = |what: &str| {
        json!({
            "200": {"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendResponse"}}}},
            "400": {"description": "refused at the door (A0001; A0002 template unknown or disabled; A0003 more than 100 receivers), or by the broker as too large (split it); nothing was produced", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendResponse"}}}},
            "401": {"description": "missing or wrong bearer token (A0401)"},
            "403": {"description": "a browser says a page of another site sent it, or a server on loopback was asked under a name that is not loopback's: {error}"},
            "413": {"description": "the body is over 1 MiB (plain text)"},
            "415": {"description": "the body is not sent as Content-Type: application/json (A0001)"},
            "429": {"description": "over the caller's rate (A0429); Retry-After says when"},
            "503": {"description": "B0001: the broker refused the request, its queue is full, or changes ahead of it waited 10 s: nothing was sent, retry; or the broker did not acknowledge it within 10 s: it may or may not have been written, look it up by bizId before sending again (msg says which)"}
        })
    };
    let change = json!({
        "200": {"description": "the change record was acknowledged: {code, msg, data: {id, version, eventTime, source}} ({account, version, eventTime, source} for an account); it applies from eventTime on"},
        "400": {"description": "refused at the door (A0001): unknown account, channel mismatch, unknown template; nothing was produced"},
        "401": {"description": "missing or wrong bearer token (A0401)"},
        "403": {"description": "the caller may not change templates (templates = true), or a browser says a page of another site sent it"},
        "503": {"description": "the broker did not acknowledge (B0001): the change may or may not have been written and the door has not applied it; send the same change again"}
    });
    let body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tidings send API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "austin-compatible: the same bodies and answers as austin's /send, /batchSend and /recall. A request is judged whole at the door and answered after the broker acknowledged it; each messageId is the one the tracking rows carry."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "MessageParam": param,
                "SendRequest": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "enum": ["send"]},
                        "messageTemplateId": {"type": "integer", "format": "int64"},
                        "messageParam": {"$ref": "#/components/schemas/MessageParam"}
                    },
                    "required": ["code", "messageTemplateId", "messageParam"]
                },
                "BatchSendRequest": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "enum": ["send"]},
                        "messageTemplateId": {"type": "integer", "format": "int64"},
                        "messageParamList": {"type": "array", "items": {"$ref": "#/components/schemas/MessageParam"}}
                    },
                    "required": ["code", "messageTemplateId", "messageParamList"]
                },
                "RecallRequest": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "enum": ["recall"]},
                        "messageTemplateId": {"type": "integer", "format": "int64"},
                        "recallMessageIds": {"type": "array", "items": {"type": "string"}}
                    },
                    "required": ["code", "messageTemplateId"]
                },
                "SimpleTaskInfo": {
                    "type": "object",
                    "properties": {
                        "bizId": {"type": "string", "nullable": true},
                        "messageId": {"type": "string", "description": "32 hex digits"},
                        "businessId": {"type": "integer", "format": "int64"}
                    }
                },
                "SendResponse": answer
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/send": {"post": {"summary": "Send one message (messageParam) to its receivers",
                "requestBody": body("SendRequest"), "responses": responses("accepted: one SimpleTaskInfo")}},
            "/batchSend": {"post": {"summary": "Send several messages of one template (messageParamList)",
                "requestBody": body("BatchSendRequest"), "responses": responses("accepted: one SimpleTaskInfo per param, in order")}},
            "/recall": {"post": {"summary": "Recall sent messages",
                "requestBody": body("RecallRequest"), "responses": responses("accepted: data is null")}},
            "/templates": {
                "get": {"summary": "The templates the door knows, each with its version and whether it is enabled",
                    "responses": {"200": {"description": "{code, msg, data: [{id, version, enabled, template}]}"}}},
                "post": {"summary": "Create or replace a template from now on (a caller with templates = true)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                        "description": "the fields of a [[template]] table (docs/templates.md)",
                        "required": ["id", "name", "channel", "msg_type", "id_type", "account"]}}}},
                    "responses": change.clone()}
            },
            "/templates/{id}/disable": {"post": {"summary": "Disable a template from now on",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": change.clone()}},
            "/lists": {
                "get": {"summary": "The discard list and whitelist the door knows",
                    "responses": {"200": {"description": "{code, msg, data: {discard, whitelist}}"}}},
                "post": {"summary": "Replace the discard list and/or the whitelist from now on",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                        "properties": {"discard": {"type": "array", "items": {"type": "integer"}},
                            "whitelist": {"type": "array", "items": {"type": "string"}}}}}}},
                    "responses": change.clone()}
            },
            "/accounts": {"get": {"summary": "The job's accounts: channel and provider, and the version and table the changes made through this door gave each",
                "responses": {"200": {"description": "{code, msg, data: [{account, version, channel, provider | settings, eventTime, source}]}"}}}},
            "/accounts/{name}": {"post": {"summary": "Replace an account's settings from now on (a caller with templates = true); secrets only as ${ENV} references",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "description": "the [accounts.NAME] table as JSON (docs/job-file.md); the channel and queue stay the job file's",
                    "required": ["channel", "provider"]}}}},
                "responses": change}}
        }
    })
}

/// The document `tidings serve` answers: the send routes at the root (the job named by the
/// token or the only one) and under `/jobs/{name}`, and the door's change routes under
/// `/jobs/{name}` only, behind the service's token.
pub fn serve_document() -> Value {
    let mut doc = document();
    let door = doc["paths"].as_object().cloned().unwrap_or_default();
    let job = json!({"name": "name", "in": "path", "required": true,
        "description": "the job's name", "schema": {"type": "string"}});
    let mut paths = serde_json::Map::new();
    for (path, mut item) in door {
        if matches!(path.as_str(), "/send" | "/batchSend" | "/recall") {
            paths.insert(path.clone(), item.clone());
        }
        let under = format!("/jobs/{{name}}{}", path.replace("{name}", "{account}"));
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let mut parameters = vec![job.clone()];
            for mut p in op["parameters"].as_array().cloned().unwrap_or_default() {
                if p["name"] == "name" {
                    p["name"] = json!("account");
                }
                parameters.push(p);
            }
            op["parameters"] = Value::Array(parameters);
        }
        paths.insert(under, item);
    }
    doc["paths"] = Value::Object(paths);
    doc["info"]["description"] = json!(
        "tidings serve: each job's send API (austin-compatible /send, /batchSend, /recall) and its door's template, list and account changes under /jobs/{name}."
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve`'s document names the routes `serve` has: the change routes only under a job,
    /// with the job (and an account's name) as path parameters.
    #[test]
    fn serves_document_names_its_own_routes() {
        let doc = serve_document();
        let paths = doc["paths"].as_object().unwrap();
        let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "/batchSend",
                "/jobs/{name}/accounts",
                "/jobs/{name}/accounts/{account}",
                "/jobs/{name}/batchSend",
                "/jobs/{name}/lists",
                "/jobs/{name}/recall",
                "/jobs/{name}/send",
                "/jobs/{name}/templates",
                "/jobs/{name}/templates/{id}/disable",
                "/recall",
                "/send",
            ]
        );
        let params = |path: &str, method: &str| -> Vec<String> {
            paths[path][method]["parameters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| p["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            params("/jobs/{name}/accounts/{account}", "post"),
            ["name", "account"]
        );
        assert_eq!(
            params("/jobs/{name}/templates/{id}/disable", "post"),
            ["name", "id"]
        );
        assert_eq!(params("/jobs/{name}/send", "post"), ["name"]);
        assert!(params("/send", "post").is_empty());
        // The door's own document is unchanged.
        assert!(document()["paths"]["/accounts/{name}"].is_object());
    }
}

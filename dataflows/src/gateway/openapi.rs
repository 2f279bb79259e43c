//! The OpenAPI 3.0 document of the send API, served at `/openapi.json` (docs/api.md says the
//! same in prose).

use serde_json::{Value, json};

/// The document.
pub fn document() -> Value {
    let param = json!({
        "type": "object",
        "properties": {
            "bizId": {"type": "string", "description": "the caller's own id, returned and tracked"},
            "receiver": {"type": "string", "description": "receivers, comma-separated, 1 to 100"},
            "variables": {"type": "object", "additionalProperties": true,
                "description": "placeholder values (strings, numbers, booleans)"},
            "extra": {"type": "object", "additionalProperties": true}
        },
        "required": ["receiver"]
    });
    let answer = json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "example": "00000",
                "description": "00000 accepted; A0100 refused at the door; A0401 token; A0429 rate; B0001 broker"},
            "msg": {"type": "string", "example": "操作成功"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/SimpleTaskInfo"}}
        },
        "required": ["code", "msg"]
    });
    let responses = |what: &str| {
        json!({
            "200": {"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendResponse"}}}},
            "400": {"description": "refused at the door (A0100); nothing was produced", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendResponse"}}}},
            "401": {"description": "missing or wrong bearer token (A0401)"},
            "429": {"description": "over the caller's rate (A0429); Retry-After says when"},
            "503": {"description": "the broker did not acknowledge (B0001); nothing was sent, retry"}
        })
    };
    let change = json!({
        "200": {"description": "the change record was acknowledged: {code, msg, data: {id, version, eventTime, source}}; it applies from eventTime on"},
        "400": {"description": "refused at the door (A0100): unknown account, channel mismatch, unknown template; nothing was produced"},
        "401": {"description": "missing or wrong bearer token (A0401)"},
        "403": {"description": "the caller may not change templates (templates = true)"},
        "503": {"description": "the broker did not acknowledge (B0001)"}
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
                "requestBody": body("RecallRequest"), "responses": responses("accepted: data is empty")}},
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

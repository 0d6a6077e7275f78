//! The OpenAPI 3.1 document served at `GET /api/v1/openapi.json`, written by hand. A test
//! checks that it describes every route in [`super::ROUTES`].

use axum::Json;
use serde_json::{Value, json};

use super::lookup::{BREAK_GLASS_REASONS, PURPOSES};
use super::privacy::VERDICTS;

fn codes(list: &[(&str, &str)]) -> Value {
    Value::Array(list.iter().map(|(c, _)| json!(c)).collect())
}

fn described(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(c, d)| format!("`{c}`: {d}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn errors(extra: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for code in ["401", "503"].iter().chain(extra) {
        let what = match *code {
            "400" => "Invalid input; the message says what and how to fix it (never echoes a BSN).",
            "401" => "Missing, unknown or disabled token.",
            "403" => "Wrong role, or (lookups) need to know: see the message for break-the-glass.",
            "404" => "Not found.",
            "503" => "The audit trail cannot record the request: refused, no data (fail-closed).",
            _ => "Error.",
        };
        m.insert(
            (*code).to_owned(),
            json!({ "description": what, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(m)
}

fn op(summary: &str, roles: &str, body: Option<Value>, ok: Value, extra: &[&str]) -> Value {
    let mut responses = errors(extra);
    if let Value::Object(m) = &mut responses {
        m.insert("200".into(), ok);
    }
    let mut o = json!({
        "summary": summary,
        "description": format!("Roles: {roles}."),
        "security": [{ "bearer": [] }],
        "responses": responses,
    });
    if let (Some(b), Value::Object(m)) = (body, &mut o) {
        m.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": b } } }),
        );
    }
    o
}

fn ok(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": {} } })
}

fn page_params() -> Value {
    json!([
        { "name": "before", "in": "query", "schema": { "type": "integer" }, "description": "Cursor: next_before of the previous page." },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }
    ])
}

fn list_params() -> Value {
    json!([
        { "name": "source", "in": "query", "schema": { "type": "string" } },
        { "name": "run", "in": "query", "schema": { "type": "integer" }, "description": "Quarantine only." },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }
    ])
}

/// The document.
pub fn spec() -> Value {
    let bsn = json!({ "type": "string", "description": "BSN, 8 or 9 digits (spaces, dots, dashes allowed). Only ever in a body." });
    let mut quarantine = op(
        "Quarantined records (no personal data)",
        "operator, admin",
        None,
        ok("Quarantine entries."),
        &["400", "403"],
    );
    quarantine["parameters"] = list_params();
    let mut runs = op(
        "Sync run history",
        "operator, admin",
        None,
        ok("Runs, newest first."),
        &["400", "403"],
    );
    runs["parameters"] = list_params();
    let mut quality = op(
        "Data quality per run: shares of invalid BSNs, missing contact persons and unknown codes",
        "operator, admin",
        None,
        ok("One row per run."),
        &["400", "403"],
    );
    quality["parameters"] = list_params();
    let mut queue = op(
        "Break-the-glass lookups not reviewed yet",
        "privacy_officer",
        None,
        ok("An audit page."),
        &["400", "403"],
    );
    queue["parameters"] = page_params();
    let mut review = op(
        "Review a break-the-glass lookup (a new audit entry, never an update)",
        "privacy_officer",
        Some(json!({
            "type": "object", "required": ["verdict", "note"], "additionalProperties": false,
            "properties": {
                "verdict": { "enum": codes(VERDICTS), "description": described(VERDICTS) },
                "note": { "type": "string", "maxLength": 1000, "description": "No BSN or other 8+ digit number." }
            }
        })),
        ok("Unused: a review answers 201."),
        &["400", "403"],
    );
    review["parameters"] = json!([{ "name": "seq", "in": "path", "required": true, "schema": { "type": "integer" }, "description": "Sequence number of the break-glass entry." }]);
    if let Value::Object(m) = &mut review["responses"] {
        m.remove("200");
        m.insert("201".into(), ok("The review entry."));
    }
    let mut subject_access = op(
        "Subject access report for one BSN: organisations holding involvements and every access",
        "privacy_officer",
        Some(
            json!({ "type": "object", "required": ["bsn"], "additionalProperties": false, "properties": { "bsn": bsn } }),
        ),
        json!({ "description": "The report; CSV (formula-injection safe) with Accept: text/csv.",
                "content": { "application/json": {}, "text/csv": {} } }),
        &["400", "403"],
    );
    subject_access["description"] =
        json!("Roles: privacy_officer. Audited. `Accept: text/csv` for CSV.");

    let trigger_op = {
        let mut o = op(
            "Start a run of a source now, under its lease (202: started; 409: another instance holds the lease)",
            "operator, admin",
            Some(
                json!({ "type": "object", "required": ["source"], "additionalProperties": false,
                            "properties": { "source": { "type": "string" }, "full": { "type": "boolean" } } }),
            ),
            ok("started"),
            &["400", "403"],
        );
        if let Some(r) = o.get_mut("responses").and_then(Value::as_object_mut) {
            r.remove("200");
            r.insert(
                "202".into(),
                ok("started: run_id, source, mode; the run shows in GET /api/v1/sync/runs"),
            );
            r.insert(
                "409".into(),
                ok("lease_held: another instance is running this source"),
            );
        }
        o
    };

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Matchpoint lookup API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Who else is involved with this client or household? Need-to-know lookups, break-the-glass, the audit trail and operator views. Every request touching personal data is audited before it is answered (fail-closed)."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "Token from `matchpoint users add`." } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "string" }, "message": { "type": "string" } } },
                "Involvement": { "type": "object", "description": "One involvement as answered.",
                    "properties": {
                        "organisation": { "type": "object", "properties": { "code": { "type": "string" }, "name": { "type": "string" } } },
                        "team": { "type": ["string", "null"] },
                        "life_domain": { "type": "string" },
                        "goal": { "type": ["string", "null"], "description": "Withheld (null) when restricted." },
                        "contact": { "type": "object", "description": "name, role, phone, email; or only `general` (the organisation's general contact) when restricted." },
                        "period": { "type": "object", "properties": { "start": { "type": "string", "format": "date" }, "end": { "type": ["string", "null"], "format": "date" } } },
                        "end_reason": {
                            "type": ["object", "null"],
                            "description": "Why the involvement ended, when the source says (WMO module: the WMO588 reason of the WMO307 stop, e.g. `19` Levering volgens plan beeindigd); null otherwise and when restricted.",
                            "properties": { "code": { "type": "string" }, "description": { "type": "string" } }
                        },
                        "status": { "enum": ["planned", "active", "ended"] },
                        "coordinator": { "type": "boolean" },
                        "restricted": { "type": "boolean", "description": "A sensitive involvement of another organisation: goal, end reason and named contact withheld." },
                        "source": { "type": "string" },
                        "source_synced_at": { "type": ["string", "null"], "format": "date-time" },
                        "source_stale": { "type": "boolean" }
                    } }
            }
        },
        "paths": {
            "/healthz": { "get": { "summary": "The process is up", "responses": { "200": ok("ok") } } },
            "/readyz": { "get": { "summary": "The store is reachable; per source the last successful sync, its age and `stale`",
                "responses": { "200": ok("ready"), "503": ok("unavailable") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics (OpenMetrics text; unauthenticated, bounded labels only)",
                "responses": { "200": ok("metrics") } } },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "responses": { "200": ok("OpenAPI 3.1") } } },
            "/api/v1/me": { "get": op("The token's user", "any", None, ok("id, name, role, organisation"), &[]) },
            "/api/v1/lookups": { "post": op(
                "Who is involved with this person and their household (need to know; break-the-glass)",
                "professional",
                Some(json!({
                    "type": "object", "required": ["bsn", "purpose"], "additionalProperties": false,
                    "properties": {
                        "bsn": bsn,
                        "purpose": { "enum": codes(PURPOSES), "description": described(PURPOSES) },
                        "break_glass_reason": {
                            "type": "object", "required": ["code", "justification"], "additionalProperties": false,
                            "properties": {
                                "code": { "enum": codes(BREAK_GLASS_REASONS), "description": described(BREAK_GLASS_REASONS) },
                                "justification": { "type": "string", "minLength": 10, "maxLength": 500, "description": "No BSN or other 8+ digit number." }
                            }
                        }
                    }
                })),
                json!({ "description": "involvements (own), household (per related member, marked with the relation), warnings, break_glass flag",
                    "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "involvements": { "type": "array", "items": { "$ref": "#/components/schemas/Involvement" } },
                        "household": { "type": "array", "items": { "type": "object", "properties": {
                            "relation": { "type": "string" },
                            "involvements": { "type": "array", "items": { "$ref": "#/components/schemas/Involvement" } } } } },
                        "warnings": { "type": "array", "items": { "type": "string" } },
                        "break_glass": { "type": "boolean" } } } } } }),
                &["400", "403"],
            ) },
            "/api/v1/audit/search": { "post": op(
                "Search the audit trail",
                "privacy_officer",
                Some(json!({ "type": "object", "additionalProperties": false, "properties": {
                    "user_id": { "type": "integer" }, "organisation": { "type": "string" }, "bsn": bsn,
                    "from": { "type": "string", "format": "date-time" }, "to": { "type": "string", "format": "date-time" },
                    "outcome": { "enum": ["granted", "refused", "break_glass", "invalid", "error"] },
                    "action": { "type": "string" }, "before": { "type": "integer" },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 1000 } } })),
                ok("entries (newest first) and next_before"),
                &["400", "403"],
            ) },
            "/api/v1/audit/break-glass": { "get": queue },
            "/api/v1/audit/break-glass/{seq}/reviews": { "post": review },
            "/api/v1/audit/subject-access": { "post": subject_access },
            "/api/v1/audit/verify": {
                "get": op("Recompute the hash chain; names the first damaged entry", "privacy_officer", None, ok("The verification report."), &["403"]),
                "post": op(
                    "Recompute the hash chain against a checkpoint kept outside the database (finds a truncated tail or a rewritten chain)",
                    "privacy_officer",
                    Some(json!({ "type": "object", "required": ["checkpoint"], "additionalProperties": false,
                        "properties": { "checkpoint": { "type": "string", "description": "A line printed by `matchpoint audit checkpoint`." } } })),
                    ok("The verification report."),
                    &["400", "403"],
                )
            },
            "/api/v1/sync/runs": {
                "get": runs,
                "post": trigger_op
            },
            "/api/v1/sync/quarantine": { "get": quarantine },
            "/api/v1/sync/quality": { "get": quality }
        }
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}

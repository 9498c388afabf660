//! JSON-RPC 2.0 as MCP uses it: parsing one message, and rendering results, errors and
//! notifications. Error codes are the JSON-RPC ones plus MCP's 2026-07-28 additions.

use serde_json::{json, Map, Value};

/// The body is not JSON.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC request (or a batch where the era forbids it).
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// Bad parameters, or an unknown tool.
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// 2026-07-28: the routing headers disagree with the body.
pub(crate) const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: a protocol version this server does not speak.
pub(crate) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A JSON-RPC error to answer.
#[derive(Debug, Clone)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
    pub(crate) data: Option<Value>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(crate) fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// The HTTP status that goes with this error on Streamable HTTP (the 2026-07-28 table;
    /// tool and method failures of a well-formed request stay 200 in the legacy era).
    pub(crate) fn http_status(&self, modern: bool) -> u16 {
        match self.code {
            PARSE_ERROR | INVALID_REQUEST => 400,
            INVALID_PARAMS | HEADER_MISMATCH | UNSUPPORTED_PROTOCOL_VERSION if modern => 400,
            METHOD_NOT_FOUND if modern => 404,
            _ => 200,
        }
    }
}

/// One incoming message, checked for shape.
#[derive(Debug)]
pub(crate) enum Message {
    /// A request: answer it.
    Request {
        id: Value,
        method: String,
        params: Map<String, Value>,
    },
    /// A notification (or a response to us, which we never ask for): acknowledge it.
    Notification,
}

/// Parses a body into one message. Batches are refused: both eras served here forbid them.
pub(crate) fn parse(body: &[u8]) -> Result<Message, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            Value::Null,
            RpcError::new(PARSE_ERROR, format!("Parse error: {e}")),
        )
    })?;
    from_value(value)
}

/// Checks one decoded value for the JSON-RPC request shape.
pub(crate) fn from_value(value: Value) -> Result<Message, (Value, RpcError)> {
    let invalid = |id: Value, why: &str| Err((id, RpcError::new(INVALID_REQUEST, why.to_owned())));
    let Value::Object(mut obj) = value else {
        if value.is_array() {
            return invalid(
                Value::Null,
                "Invalid Request: JSON-RPC batches are not supported by this protocol version",
            );
        }
        return invalid(Value::Null, "Invalid Request: expected a JSON-RPC object");
    };
    let id = obj.remove("id");
    let id_ok = matches!(&id, None | Some(Value::String(_)) | Some(Value::Number(_)));
    let echo = id.clone().filter(|_| id_ok).unwrap_or(Value::Null);
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return invalid(echo, "Invalid Request: jsonrpc must be \"2.0\"");
    }
    if !id_ok {
        return invalid(
            Value::Null,
            "Invalid Request: id must be a string or a number",
        );
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        None if obj.contains_key("result") || obj.contains_key("error") => {
            // A response from the client: we send no requests, so there is nothing to match.
            return Ok(Message::Notification);
        }
        _ => return invalid(echo, "Invalid Request: method must be a non-empty string"),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err((echo, RpcError::invalid_params("params must be an object"))),
    };
    Ok(match id {
        Some(id) => Message::Request { id, method, params },
        None => Message::Notification,
    })
}

/// `{"jsonrpc":"2.0","id":..,"result":..}`.
pub(crate) fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `{"jsonrpc":"2.0","id":..,"error":{..}}`.
pub(crate) fn error(id: &Value, e: &RpcError) -> Value {
    let mut err = json!({"code": e.code, "message": e.message});
    if let Some(data) = &e.data {
        err["data"] = data.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "error": err})
}

/// `{"jsonrpc":"2.0","method":..,"params":..}`.
pub(crate) fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        assert!(matches!(parse(b"{nope"), Err((_, e)) if e.code == PARSE_ERROR));
        assert!(matches!(parse(b"[]"), Err((_, e)) if e.code == INVALID_REQUEST));
        assert!(matches!(parse(b"42"), Err((_, e)) if e.code == INVALID_REQUEST));
        assert!(
            matches!(parse(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#), Err((id, e)) if e.code == INVALID_REQUEST && id.is_null())
        );
        assert!(
            matches!(parse(br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#), Err((id, e)) if e.code == INVALID_REQUEST && id == 7)
        );
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification)
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#),
            Ok(Message::Request { .. })
        ));
    }
}

//! The gateway's own errors, for what it refuses or reports itself; each dialect renders them,
//! by default in OpenAI's shape `{"error":{"message","type","param","code"}}` (body, event, response).

use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

/// An error the gateway reports in OpenAI's shape.
#[derive(Clone, Copy, Debug)]
pub struct Error<'a> {
    /// The status, for a response.
    pub status: StatusCode,
    /// `error.type`.
    pub kind: &'a str,
    /// `error.code`.
    pub code: &'a str,
    /// `error.message`: never holds a credential.
    pub message: &'a str,
}

impl Error<'_> {
    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body =
            json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}});
        Bytes::from(body.to_string())
    }

    /// The response: `status`, the body, `content-type: application/json`.
    pub fn response(&self) -> Response {
        json_response(self.status, self.body())
    }

    /// The response, marked for the official SDKs as not worth retrying (`x-should-retry: false`):
    /// for what a retry would only repeat.
    pub fn final_response(&self) -> Response {
        let mut response = self.response();
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false"));
        response
    }
}

/// A JSON response of `status` with `body`.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

//! Errors as OpenAI sends them: a status and `{"error": {"message", "type", "param", "code"}}`.
//! Clients (the `openai` package among them) pick the exception from the status and show the
//! message, so every refusal says what was wrong and, where a field was, names it in `param`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wllm::batch::SubmitError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about one field of the request.
    pub fn field(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, ..ApiError::bad_request(message) }.with_code("not_found")
    }

    pub fn model_not_found(asked: &str, served: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::field(
                "model",
                format!("The model `{asked}` does not exist; this server serves `{served}`"),
            )
        }
        .with_code("model_not_found")
    }

    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            ..ApiError::bad_request("Missing or incorrect API key: send `Authorization: Bearer KEY`")
        }
        .with_code("invalid_api_key")
    }

    /// The model is still loading, or the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: Some("unavailable"),
        }
    }

    /// A failure in the engine: not the client's fault.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The request's refusal by the batcher. `prompt_param` names the field the prompt came
    /// from (`messages` or `prompt`), `constraint_param` the one its constraint came from
    /// (`response_format` or `grammar`).
    pub fn from_submit(e: SubmitError, prompt_param: &str, constraint_param: &str) -> ApiError {
        match e {
            SubmitError::QueueFull(_) => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                kind: "rate_limit_exceeded",
                message: format!("{e}"),
                param: None,
                code: Some("rate_limit_exceeded"),
            },
            SubmitError::ShuttingDown => ApiError::unavailable(e.to_string()),
            SubmitError::PromptTooLong { .. } => {
                ApiError::field(prompt_param, e.to_string()).with_code("context_length_exceeded")
            }
            SubmitError::EmptyPrompt => ApiError::field(prompt_param, e.to_string()),
            SubmitError::TokenOutOfVocab { index, .. } => {
                ApiError::field(format!("{prompt_param}[{index}]"), e.to_string())
            }
            SubmitError::Invalid(inner) => match *inner {
                wllm::Error::Constraint(c) => {
                    ApiError::field(constraint_param, format!("{constraint_param}: {c}"))
                }
                inner => ApiError::bad_request(inner.to_string()),
            },
            // A refusal added later is still the request's fault.
            e => ApiError::bad_request(e.to_string()),
        }
    }

    /// The JSON body, also sent as an SSE event when a stream fails after it began.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body().to_string())
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Clients that honour it (the `openai` package does) back off this long.
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

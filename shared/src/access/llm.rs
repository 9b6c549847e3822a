//! LLM client: any OpenAI-compatible Chat Completions endpoint, through async-openai.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestMessageContentPartFile, ChatCompletionRequestMessageContentPartImage,
    ChatCompletionRequestMessageContentPartText, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionRequestUserMessageContentPart,
    CreateChatCompletionResponse, FileObject, FunctionCall, ImageDetail, ImageUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::engine::prompt::{ChatMessage, InlineFile, ToolCall};
use crate::engine::text::into_storable;
use crate::engine::tool::FunctionSpec;
use crate::engine::turn::ModelAnswer;

/// Errors of the LLM endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The endpoint answered with an error status.
    #[error("the model endpoint answered HTTP {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
        /// The endpoint's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The call did not complete (connection, timeout).
    #[error("cannot reach the model endpoint: {0}")]
    Transport(String),
    /// The endpoint's answer could not be understood.
    #[error("unexpected answer from the model endpoint: {0}")]
    Malformed(String),
}

impl LlmError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Transport(_) => true,
            Self::Malformed(_) => false,
        }
    }
}

impl From<LlmError> for crate::job::JobFailure {
    fn from(e: LlmError) -> Self {
        let retryable = e.is_retryable();
        let retry_after = match &e {
            LlmError::Api { retry_after, .. } => *retry_after,
            _ => None,
        };
        Self::new(e, retryable, "Cannot get an answer from the model").with_retry_after(retry_after)
    }
}

impl From<OpenAIError> for LlmError {
    fn from(e: OpenAIError) -> Self {
        match e {
            OpenAIError::ApiError(api) => Self::Api {
                status: api.status_code.as_u16(),
                message: api.api_error.message,
                retry_after: None,
            },
            OpenAIError::Reqwest(e) => Self::Transport(e.to_string()),
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// One model call.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// Conversation so far.
    pub messages: &'a [ChatMessage],
    /// Functions the model may call.
    pub tools: &'a OfferedTools,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Upper bound on output tokens.
    pub max_output_tokens: Option<u32>,
}

/// The model's answer and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub answer: ModelAnswer,
    /// Provider's response id.
    pub response_id: String,
    /// Model that answered.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
}

tokio::task_local! {
    /// The `Retry-After` of the last HTTP answer of a [`LlmClient::complete`]
    /// call (async-openai turns an error answer into an error without headers).
    static RETRY_AFTER: Cell<Option<Duration>>;
}

/// Notes a `Retry-After` (in seconds) of an HTTP answer for the running call.
fn note_retry_after(response: reqwest::Response) -> reqwest::Response {
    let after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(86_400.0)));
    // Outside a `complete` call (never, today) there is nowhere to note it.
    let _ = RETRY_AFTER.try_with(|cell| cell.set(after));
    response
}

/// Client of an OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct LlmClient {
    client: Client<OpenAIConfig>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient").finish_non_exhaustive()
    }
}

impl LlmClient {
    /// A client for `base_url` (including `/v1`). Retries are left to the job
    /// queue, so async-openai's own retry layer is not installed.
    pub fn new(base_url: &str, api_key: &SecretString, timeout: Duration) -> reqwest::Result<Self> {
        let http = super::http_client(timeout)?;
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key.expose_secret());
        let client = Client::build(http.clone(), config).with_http_service(
            tower::ServiceBuilder::new()
                .map_response(note_retry_after)
                .service(ReqwestService::new(http)),
        );
        Ok(Self { client })
    }

    /// Asks the model once.
    #[tracing::instrument(skip_all, fields(gen_ai.request.model = request.model, gen_ai.response.id, gen_ai.usage.input_tokens, gen_ai.usage.output_tokens))]
    pub async fn complete(&self, request: &CompletionRequest<'_>) -> Result<Completion, LlmError> {
        let built = ChatRequest {
            model: request.model,
            messages: to_openai_messages(request.messages)?,
            tools: request.tools.json(),
            temperature: request.temperature,
            max_completion_tokens: request.max_output_tokens,
        };
        let started = std::time::Instant::now();
        let (response, retry_after) = RETRY_AFTER
            .scope(Cell::new(None), async {
                let response: Result<CreateChatCompletionResponse, _> =
                    self.client.chat().create_byot(built).await;
                (response, RETRY_AFTER.with(Cell::get))
            })
            .await;
        metrics::histogram!("automate_e_llm_call_seconds").record(started.elapsed().as_secs_f64());
        let response = response.map_err(|e| match LlmError::from(e) {
            LlmError::Api {
                status, message, ..
            } => LlmError::Api {
                status,
                message,
                retry_after,
            },
            other => other,
        })?;
        let choice = response
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::Malformed("no choices".to_owned()))?;
        let tool_calls = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .filter_map(|call| match call {
                ChatCompletionMessageToolCalls::Function(c) => Some(ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: into_storable(c.function.arguments),
                }),
                // Custom (free-form) tools are never offered, so never honoured.
                ChatCompletionMessageToolCalls::Custom(_) => None,
            })
            .collect();
        let (input_tokens, output_tokens) = response
            .usage
            .map(|u| (u.prompt_tokens, u.completion_tokens))
            .unwrap_or((0, 0));
        metrics::counter!("automate_e_llm_tokens_total", "direction" => "input")
            .increment(u64::from(input_tokens));
        metrics::counter!("automate_e_llm_tokens_total", "direction" => "output")
            .increment(u64::from(output_tokens));
        let span = tracing::Span::current();
        span.record("gen_ai.response.id", response.id.as_str());
        span.record("gen_ai.usage.input_tokens", input_tokens);
        span.record("gen_ai.usage.output_tokens", output_tokens);
        Ok(Completion {
            answer: ModelAnswer {
                content: choice.message.content.map(into_storable),
                tool_calls,
            },
            response_id: response.id,
            model: response.model,
            input_tokens,
            output_tokens,
        })
    }
}

/// The Chat Completions `tools` array of some functions, serialized once:
/// an API's operations are tens of kilobytes of schema, which each call
/// then writes into its body as they are.
#[derive(Debug, Clone, Default)]
pub struct OfferedTools(Option<Arc<RawValue>>);

impl OfferedTools {
    /// `functions` as `function` tools; none when there are none.
    pub fn new(functions: &[FunctionSpec]) -> Self {
        if functions.is_empty() {
            return Self(None);
        }
        // JSON values always serialize (their map keys are strings).
        let json = serde_json::value::to_raw_value(&Tools(functions))
            .expect("function schemas serialize as JSON");
        Self(Some(Arc::from(json)))
    }

    fn json(&self) -> Option<&RawValue> {
        self.0.as_deref()
    }
}

impl PartialEq for OfferedTools {
    fn eq(&self, other: &Self) -> bool {
        self.json().map(RawValue::get) == other.json().map(RawValue::get)
    }
}

/// A Chat Completions request (the body `CreateChatCompletionRequest`
/// describes, without streaming) serialized from borrowed parts, the
/// tools as [`OfferedTools`] made them.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatCompletionRequestMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

/// Functions offered as Chat Completions `function` tools.
struct Tools<'a>(&'a [FunctionSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Tool<'a> {
            r#type: &'static str,
            function: Function<'a>,
        }
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            description: &'a str,
            parameters: &'a serde_json::Value,
        }
        serializer.collect_seq(self.0.iter().map(|f| Tool {
            r#type: "function",
            function: Function {
                name: &f.name,
                description: &f.description,
                parameters: &f.parameters,
            },
        }))
    }
}

/// A message's text, then its files: an image as an image part (the
/// model's full detail: receipts have small print), anything else (a PDF)
/// as a file part.
fn user_parts(
    text: &str,
    files: &[InlineFile],
) -> Vec<ChatCompletionRequestUserMessageContentPart> {
    let mut parts = vec![ChatCompletionRequestUserMessageContentPart::Text(
        ChatCompletionRequestMessageContentPartText {
            text: text.to_owned(),
            prompt_cache_breakpoint: None,
        },
    )];
    for file in files {
        parts.push(if file.is_image() {
            ChatCompletionRequestUserMessageContentPart::ImageUrl(
                ChatCompletionRequestMessageContentPartImage {
                    image_url: ImageUrl {
                        url: file.data_url(),
                        detail: Some(ImageDetail::High),
                    },
                    prompt_cache_breakpoint: None,
                },
            )
        } else {
            ChatCompletionRequestUserMessageContentPart::File(
                ChatCompletionRequestMessageContentPartFile {
                    file: FileObject {
                        file_data: Some(file.data_url()),
                        file_id: None,
                        filename: Some(file.filename.clone()),
                    },
                    prompt_cache_breakpoint: None,
                },
            )
        });
    }
    parts
}

fn to_openai_messages(
    messages: &[ChatMessage],
) -> Result<Vec<ChatCompletionRequestMessage>, LlmError> {
    messages
        .iter()
        .map(|m| {
            Ok(match m {
                ChatMessage::System { content } => {
                    ChatCompletionRequestSystemMessage::from(content.as_str()).into()
                }
                ChatMessage::User { content, files } if files.is_empty() => {
                    ChatCompletionRequestUserMessage::from(content.as_str()).into()
                }
                ChatMessage::User { content, files } => ChatCompletionRequestUserMessage {
                    content: ChatCompletionRequestUserMessageContent::Array(user_parts(
                        content, files,
                    )),
                    name: None,
                }
                .into(),
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => {
                    let mut args = ChatCompletionRequestAssistantMessageArgs::default();
                    if let Some(content) = content {
                        args.content(content.as_str());
                    }
                    if !tool_calls.is_empty() {
                        args.tool_calls(
                            tool_calls
                                .iter()
                                .map(|c| {
                                    ChatCompletionMessageToolCalls::Function(
                                        ChatCompletionMessageToolCall {
                                            id: c.id.clone(),
                                            function: FunctionCall {
                                                name: c.name.clone(),
                                                arguments: c.arguments.clone(),
                                            },
                                        },
                                    )
                                })
                                .collect::<Vec<_>>(),
                        );
                    }
                    args.build()
                        .map_err(|e| LlmError::Malformed(e.to_string()))?
                        .into()
                }
                ChatMessage::Tool {
                    tool_call_id,
                    content,
                } => ChatCompletionRequestToolMessage {
                    content: content.as_str().into(),
                    tool_call_id: tool_call_id.clone(),
                }
                .into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use async_openai::types::chat::{
        ChatCompletionTool, ChatCompletionTools, CreateChatCompletionRequestArgs, FunctionObject,
    };
    use serde_json::json;

    use super::*;

    /// The borrowed request is the body async-openai's own request type
    /// makes of the same parts.
    #[test]
    fn the_borrowed_request_serializes_as_async_openais_request() {
        let functions = [FunctionSpec {
            name: "get_bank_balances".to_owned(),
            description: "Bank balances".to_owned(),
            parameters: json!({"type": "object", "properties": {"date": {"type": "string"}}}),
        }];
        let messages = [
            ChatMessage::System {
                content: "You are Book-E.".to_owned(),
            },
            ChatMessage::User {
                content: "Hei".to_owned(),
                files: Vec::new(),
            },
        ];
        for (functions, temperature, max) in [
            (&functions[..], Some(0.2), Some(800)),
            (&[][..], None, None),
        ] {
            let tools = OfferedTools::new(functions);
            let ours = ChatRequest {
                model: "gpt-test",
                messages: to_openai_messages(&messages).unwrap(),
                tools: tools.json(),
                temperature,
                max_completion_tokens: max,
            };
            let mut args = CreateChatCompletionRequestArgs::default();
            args.model("gpt-test")
                .messages(to_openai_messages(&messages).unwrap());
            if !functions.is_empty() {
                args.tools(
                    functions
                        .iter()
                        .map(|f| {
                            ChatCompletionTools::Function(ChatCompletionTool {
                                function: FunctionObject {
                                    name: f.name.clone(),
                                    description: Some(f.description.clone()),
                                    parameters: Some(f.parameters.clone()),
                                    strict: None,
                                },
                            })
                        })
                        .collect::<Vec<_>>(),
                );
            }
            if let Some(t) = temperature {
                args.temperature(t);
            }
            if let Some(m) = max {
                args.max_completion_tokens(m);
            }
            assert_eq!(
                serde_json::to_value(&ours).unwrap(),
                serde_json::to_value(args.build().unwrap()).unwrap()
            );
        }
    }
}

//! Slack interactivity edge (`block_actions`, `view_submission`): verifies
//! the signature on the raw form body, then hands Approve / Reject clicks and
//! the reject-reason modal to the ReviewDesk. Slack expects an answer within
//! three seconds; the slow parts (updating the card) never hold the answer.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::engine::review::{
    APPROVE_ACTION, REASON_ACTION, REASON_BLOCK, RECEIPT_ACTION, REJECT_ACTION, REJECT_CALLBACK,
};
use shared::engine::text::json_holds_nul;
use shared::job::JobFailure;
use slack_morphism::SlackActionId;
use slack_morphism::blocks::{SlackBlockId, SlackView};
use slack_morphism::events::SlackInteractionEvent;

use super::{ApiError, HttpState};
use crate::manager::review_desk::Click;

/// `POST /slack/interactivity`.
pub(super) async fn interactivity(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::slack::verify(&state, &headers, &body)?;
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a form body: {e}")))?;
    let payload = form
        .get("payload")
        .ok_or_else(|| ApiError::BadRequest("no `payload` field".to_owned()))?;
    let not_a_payload = |e: serde_json::Error| {
        ApiError::BadRequest(format!("not a Slack interaction payload: {e}"))
    };
    let raw: serde_json::Value = serde_json::from_str(payload).map_err(not_a_payload)?;
    // Slack sends no NUL character; Postgres could store no id holding one.
    if json_holds_nul(&raw) {
        return Err(ApiError::BadRequest(
            "the payload holds a NUL character".to_owned(),
        ));
    }
    let event: SlackInteractionEvent = serde_json::from_value(raw).map_err(not_a_payload)?;
    match event {
        SlackInteractionEvent::BlockActions(event) => {
            let Some(user) = event.user.as_ref().map(|u| u.id.0.clone()) else {
                return Ok(StatusCode::OK.into_response());
            };
            let channel = event.channel.as_ref().map(|c| c.id.0.clone());
            for action in event.actions.iter().flatten() {
                let Some(value) = action.value.as_deref() else {
                    continue;
                };
                let click = Click {
                    user: &user,
                    channel: channel.as_deref(),
                    value,
                };
                let result = match action.action_id.0.as_str() {
                    APPROVE_ACTION => state.reviews.approve(&click).await,
                    RECEIPT_ACTION => state.reviews.show_receipts(&click).await,
                    REJECT_ACTION => {
                        state
                            .reviews
                            .ask_reject_reason(&click, &event.trigger_id.0)
                            .await
                    }
                    _ => Ok(()),
                };
                answer(result)?;
            }
            Ok(StatusCode::OK.into_response())
        }
        SlackInteractionEvent::ViewSubmission(event) => {
            let SlackView::Modal(modal) = &event.view.view else {
                return Ok(StatusCode::OK.into_response());
            };
            if modal.callback_id.as_ref().map(|c| c.0.as_str()) != Some(REJECT_CALLBACK) {
                return Ok(StatusCode::OK.into_response());
            }
            let reason = event
                .view
                .state_params
                .state
                .as_ref()
                .and_then(|s| s.values.get(&SlackBlockId(REASON_BLOCK.to_owned())))
                .and_then(|block| block.get(&SlackActionId(REASON_ACTION.to_owned())))
                .and_then(|v| v.value.clone())
                .unwrap_or_default();
            if reason.trim().is_empty() {
                let errors = json!({"response_action": "errors", "errors": {REASON_BLOCK: "Please say why."}});
                return Ok(Json(errors).into_response());
            }
            let value = modal.private_metadata.clone().unwrap_or_default();
            let click = Click {
                user: &event.user.id.0,
                channel: None,
                value: &value,
            };
            answer(state.reviews.reject(&click, &reason).await)?;
            Ok(StatusCode::OK.into_response())
        }
        _ => Ok(StatusCode::OK.into_response()),
    }
}

/// A permanent failure (a malformed reference) is the request's fault; a
/// retryable one asks Slack to show an error so the reviewer can click again.
fn answer(result: Result<(), JobFailure>) -> Result<(), ApiError> {
    match result {
        Ok(()) => Ok(()),
        Err(JobFailure::Permanent(e)) => Err(ApiError::BadRequest(format!("{e:#}"))),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

//! berth's own admin operations (JSON 1.1, `X-Amz-Target: BerthAdmin_v1.<Operation>`, signed
//! for the service `berth`), for what ECS has no API for: cluster join tokens.
//!
//! - `CreateJoinToken {cluster, expiresInSeconds?, description?}` → the token (shown only
//!   here) and its description; authorized as `berth:CreateJoinToken` on the cluster's ARN.
//! - `ListJoinTokens {cluster?}` → descriptions, never secrets; `berth:ListJoinTokens` on `*`.
//! - `RevokeJoinToken {tokenId}` → the description; `berth:RevokeJoinToken` on the token's
//!   cluster ARN (`*` for a token of every cluster).

use std::time::Duration;

use berth_control::join_tokens::{
    CreateJoinToken, JoinScope, JoinTokenId, JoinTokenRecord, DEFAULT_LIFETIME,
};
use berth_core::ids::ClusterName;
use berth_iam::{Caller, Check, ContextKeys};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws_error::AwsError;
use crate::AppState;

pub const TARGET_PREFIX: &str = "BerthAdmin_v1";
pub const SIGNING_NAME: &str = "berth";

pub const SERVED: &[&str] = &["CreateJoinToken", "ListJoinTokens", "RevokeJoinToken"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRequest {
    cluster: Option<String>,
    expires_in_seconds: Option<u64>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListRequest {
    cluster: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeRequest {
    token_id: Option<String>,
}

/// A token as listed: everything but the secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinTokenView {
    token_id: String,
    /// The cluster's name, or `*` for every cluster.
    cluster: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    created_at: f64,
    expires_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<f64>,
}

fn view(state: &AppState, r: &JoinTokenRecord) -> JoinTokenView {
    JoinTokenView {
        token_id: r.id.to_string(),
        cluster: match &r.scope {
            JoinScope::Cluster(c) => c.to_string(),
            JoinScope::AllClusters => "*".into(),
        },
        status: r.status(state.control.ctx.now()).as_str(),
        description: r.description.clone(),
        created_by: r.created_by.clone(),
        created_at: r.created_at.epoch_secs(),
        expires_at: r.expires_at.epoch_secs(),
        revoked_at: r.revoked_at.map(|t| t.epoch_secs()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    crate::json::parse(body).map_err(AwsError::from)
}

fn validation(message: impl Into<String>) -> AwsError {
    AwsError::new("ValidationException", 400, message)
}

fn out<T: Serialize>(v: T) -> Result<Value, AwsError> {
    serde_json::to_value(v).map_err(|e| AwsError::new("InternalServerError", 500, e.to_string()))
}

impl AppState {
    fn authorize_admin(
        &self,
        caller: &Caller,
        operation: &str,
        resource: &str,
    ) -> Result<(), AwsError> {
        let keys = ContextKeys::new();
        self.iam
            .authorize(
                caller,
                &Check::new(&format!("berth:{operation}"), resource, &keys),
            )
            .map_err(|d| AwsError::new("AccessDeniedException", 400, d.message))
    }
}

fn cluster_name(given: &str) -> Result<ClusterName, AwsError> {
    // A cluster ARN names the cluster too.
    let name = given.rsplit_once(":cluster/").map_or(given, |(_, n)| n);
    ClusterName::new(name).map_err(AwsError::from)
}

pub async fn dispatch(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    body: &[u8],
) -> Result<Value, AwsError> {
    let cp = &state.control;
    match operation {
        "CreateJoinToken" => {
            let req: CreateRequest = parse(body)?;
            let cluster = cluster_name(req.cluster.as_deref().ok_or_else(|| {
                validation("cluster is required: the cluster the token admits instances to.")
            })?)?;
            state.authorize_admin(caller, operation, &cp.arns().cluster(&cluster))?;
            let lifetime = req
                .expires_in_seconds
                .map_or(DEFAULT_LIFETIME, Duration::from_secs);
            let (record, secret) = cp
                .join_tokens
                .create(CreateJoinToken {
                    scope: JoinScope::Cluster(cluster),
                    lifetime,
                    description: req.description,
                    created_by: Some(caller.arn()),
                })
                .await?;
            out(serde_json::json!({
                "token": secret.expose(),
                "joinToken": view(state, &record),
            }))
        }
        "ListJoinTokens" => {
            let req: ListRequest = parse(body)?;
            state.authorize_admin(caller, operation, "*")?;
            let cluster = req.cluster.as_deref().map(cluster_name).transpose()?;
            let tokens = cp.join_tokens.list(cluster.as_ref()).await?;
            out(serde_json::json!({
                "joinTokens": tokens.iter().map(|t| view(state, t)).collect::<Vec<_>>(),
            }))
        }
        "RevokeJoinToken" => {
            let req: RevokeRequest = parse(body)?;
            let id = JoinTokenId::new(
                req.token_id
                    .ok_or_else(|| validation("tokenId is required."))?,
            )?;
            let not_found = || {
                AwsError::new(
                    "ResourceNotFoundException",
                    400,
                    format!("Join token {id} not found."),
                )
            };
            let record = cp.join_tokens.get(&id).await?.ok_or_else(not_found)?;
            let resource = match &record.scope {
                JoinScope::Cluster(c) => cp.arns().cluster(c),
                JoinScope::AllClusters => "*".to_string(),
            };
            state.authorize_admin(caller, operation, &resource)?;
            let record = cp.join_tokens.revoke(&id).await?;
            out(serde_json::json!({ "joinToken": view(state, &record) }))
        }
        other => Err(AwsError::new(
            "UnknownOperationException",
            400,
            format!("{other} is not an operation of {TARGET_PREFIX}."),
        )),
    }
}

//! AWS Security Token Service (query protocol, `2011-06-15`): `GetCallerIdentity` (needs no
//! permission, as in AWS) and `AssumeRole` (temporary credentials for a role: the caller's
//! identity policies and the role's trust policy decide; sessions expire).

use axum::response::Response;
use berth_iam::Caller;

use crate::aws_error::AwsError;
use crate::query::params::QueryParams;
use crate::query::xml::{document, iso8601, ok, Xml};
use crate::query::QueryService;
use crate::AppState;

pub const SERVED: &[&str] = &["GetCallerIdentity", "AssumeRole"];

const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

pub async fn handle(state: &AppState, caller: &Caller, params: &QueryParams) -> Response {
    match run(state, caller, params).await {
        Ok(doc) => ok(doc),
        Err(e) => e.xml(Some(QueryService::Sts.xmlns())),
    }
}

async fn run(state: &AppState, caller: &Caller, params: &QueryParams) -> Result<String, AwsError> {
    let action = params.get("Action").unwrap_or_default();
    match action {
        "GetCallerIdentity" => {
            tracing::info!(
                target: "berth::audit",
                principal = %caller.arn(),
                access_key = %caller.access_key_id,
                action = "sts:GetCallerIdentity",
                resource = "*",
                decision = "allow",
                reason = "needs no permission",
                "authorization"
            );
            let (user_id, arn) = (caller.user_id(), caller.arn());
            Ok(document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.text("UserId", &user_id);
                    x.text("Account", &caller.account);
                    x.text("Arn", &arn);
                }),
            ))
        }
        "AssumeRole" => {
            let role_arn = params.required("RoleArn")?;
            let session_name = params.required("RoleSessionName")?;
            let duration = params.int("DurationSeconds")?;
            let session = state
                .iam
                .assume_role(caller, role_arn, session_name, duration)
                .await?;
            let assumed_arn = format!(
                "arn:aws:sts::{}:assumed-role/{}/{}",
                caller.account, session.role.name, session.session_name
            );
            let assumed_id = format!("{}:{}", session.role.id, session.session_name);
            Ok(document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.elem("Credentials", |x| {
                        x.text("AccessKeyId", &session.access_key_id);
                        x.text("SecretAccessKey", &session.secret_access_key);
                        x.text("SessionToken", &session.session_token);
                        x.text("Expiration", &iso8601(session.expiration));
                    });
                    x.elem("AssumedRoleUser", |x| {
                        x.text("AssumedRoleId", &assumed_id);
                        x.text("Arn", &assumed_arn);
                    });
                }),
            ))
        }
        "" => Err(AwsError::new(
            "MissingAction",
            400,
            "The request must contain the parameter Action.",
        )),
        other => Err(AwsError::new(
            "InvalidAction",
            400,
            format!("Could not find operation {other} for version 2011-06-15 (berth serves GetCallerIdentity and AssumeRole)."),
        )),
    }
}

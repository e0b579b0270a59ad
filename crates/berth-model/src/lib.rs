//! ECS data shapes shared by the control plane, the API and the agent.
//!
//! Field names and types follow botocore's `ecs/2014-11-13/service-2.json`. Shapes that users
//! send us (task definitions) keep every field they carry, interpreted or not, so a
//! registered task definition describes back exactly as it was written.

mod arn;
mod error;
mod shapes;
pub mod status;

pub use arn::{Arn, ArnBuilder, ResourceKind};
pub use error::{ApiError, ErrorCode};
pub use shapes::*;

/// Attribute an agent sets on instances it registered by itself into every cluster
/// (`berth dev`); such instances do not keep a cluster from being deleted.
pub const AUTO_REGISTERED_ATTRIBUTE: &str = "berth.auto-registered";

/// Seconds since the Unix epoch, as ECS's JSON protocol encodes timestamps.
pub fn now_epoch() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0
}

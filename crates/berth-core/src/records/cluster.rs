use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::NameValue;
use crate::clock::Timestamp;
use crate::ids::ClusterName;
use crate::status::ClusterStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: ClusterName,
    pub status: ClusterStatus,
    pub created_at: Timestamp,
    /// `settings` (e.g. containerInsights), as given.
    pub settings: Vec<NameValue>,
    /// ECS documents berth keeps and returns but does not act on yet.
    pub configuration: Option<Value>,
    pub service_connect_defaults: Option<Value>,
    pub capacity_providers: Vec<String>,
    pub default_capacity_provider_strategy: Vec<Value>,
}

impl ClusterRecord {
    pub fn is_active(&self) -> bool {
        self.status == ClusterStatus::Active
    }
}

//! The store's key layout. Keys are ordered strings, so scans by prefix list one kind of
//! record, within one cluster where that applies.

pub fn cluster(name: &str) -> String {
    format!("cluster/{name}")
}
pub const CLUSTERS: &str = "cluster/";

pub fn family(family: &str) -> String {
    format!("family/{family}")
}

/// Revisions are zero-padded so that key order is revision order.
pub fn task_definition(family: &str, revision: i64) -> String {
    format!("taskdef/{family}/{revision:010}")
}
pub fn task_definitions_of(family: &str) -> String {
    format!("taskdef/{family}/")
}
pub const TASK_DEFINITIONS: &str = "taskdef/";

pub fn instance(cluster: &str, id: &str) -> String {
    format!("instance/{cluster}/{id}")
}
pub fn instances_of(cluster: &str) -> String {
    format!("instance/{cluster}/")
}

pub fn task(cluster: &str, id: &str) -> String {
    format!("task/{cluster}/{id}")
}
pub fn tasks_of(cluster: &str) -> String {
    format!("task/{cluster}/")
}

/// Index of the tasks an instance's agent is responsible for (until they are STOPPED).
pub fn assignment(cluster: &str, instance_id: &str, task_id: &str) -> String {
    format!("assign/{cluster}/{instance_id}/{task_id}")
}
pub fn assignments_of(cluster: &str, instance_id: &str) -> String {
    format!("assign/{cluster}/{instance_id}/")
}

/// Bumped by every placement in a cluster, so concurrent placements conflict instead of
/// both spending the same free capacity.
pub fn placement_token(cluster: &str) -> String {
    format!("placement/{cluster}")
}

pub fn tags(arn: &str) -> String {
    format!("tags/{arn}")
}

/// RunTask clientToken → the task ARNs it created, for idempotent retries.
pub fn client_token(cluster: &str, token: &str) -> String {
    format!("client-token/{cluster}/{token}")
}

//! The store's key layout. Keys are ordered strings; names and ids never contain `/`
//! (they are validated), and free-form index values are escaped.
//!
//! ```text
//! c/<cluster>                          ClusterRecord
//! cp/<cluster>                         placement token: bumped by every commit that changes
//!                                      what placement decisions read (tasks placed, instances
//!                                      registered/deregistered/drained, cluster deleted)
//! ci/<cluster>/<instance>              InstanceRecord
//! cu/<cluster>/<instance>              InstanceUsage (what live tasks hold there)
//! conn/<cluster>/<instance>            present while the instance's agent has a session (leased)
//! t/<cluster>/<task>                   TaskRecord
//! ta/<cluster>/<instance>/<task>       the task's assignment to that instance's agent
//! ti/<cluster>/<dim>/<value>/<desired>/<created>-<task>    task indexes for ListTasks
//! ct/<cluster>/<client token>          RunTask clientToken → task ids
//! td/<family>/<revision>               TaskDefinitionRecord
//! tds/<status>/<family>/<revision>     task definitions by status (empty values)
//! tdf/<family>                         FamilyRecord
//! s/<cluster>/<service>                ServiceRecord
//! sg/<cluster>/<service>               the service's task generation (reconcile guard)
//! sd/<cluster>/<service>/<number>      ServiceDeploymentRecord (deployment history)
//! tags/<arn>                           the resource's tags
//! as/<principal>/<setting>             account settings
//! meta/<name>                          server-wide facts (identity)
//! jt/<token id>                        JoinTokenRecord (a cluster join token, its secret hashed)
//! ```

use berth_core::ids::{
    ClusterName, DeploymentId, Family, InstanceId, ServiceName, TaskDefinitionId, TaskId,
};
use berth_core::status::{DesiredStatus, TaskDefinitionStatus};
use berth_core::Timestamp;

pub fn join_token(id: &str) -> String {
    format!("jt/{id}")
}
pub const JOIN_TOKENS: &str = "jt/";

pub fn cluster(name: &ClusterName) -> String {
    format!("c/{name}")
}
pub const CLUSTERS: &str = "c/";

pub fn placement_token(cluster: &ClusterName) -> String {
    format!("cp/{cluster}")
}

pub fn instance(cluster: &ClusterName, id: &InstanceId) -> String {
    format!("ci/{cluster}/{id}")
}
pub fn instances_of(cluster: &ClusterName) -> String {
    format!("ci/{cluster}/")
}
pub const INSTANCES: &str = "ci/";

pub fn usage(cluster: &ClusterName, id: &InstanceId) -> String {
    format!("cu/{cluster}/{id}")
}
pub fn usages_of(cluster: &ClusterName) -> String {
    format!("cu/{cluster}/")
}

pub fn connection(cluster: &ClusterName, id: &InstanceId) -> String {
    format!("conn/{cluster}/{id}")
}
pub fn connections_of(cluster: &ClusterName) -> String {
    format!("conn/{cluster}/")
}
pub const CONNECTIONS: &str = "conn/";

pub fn task(cluster: &ClusterName, id: &TaskId) -> String {
    format!("t/{cluster}/{id}")
}
pub fn tasks_of(cluster: &ClusterName) -> String {
    format!("t/{cluster}/")
}
pub const TASKS: &str = "t/";

pub fn assignment(cluster: &ClusterName, instance: &InstanceId, task: &TaskId) -> String {
    format!("ta/{cluster}/{instance}/{task}")
}
pub fn assignments_of(cluster: &ClusterName, instance: &InstanceId) -> String {
    format!("ta/{cluster}/{instance}/")
}

pub fn client_token(cluster: &ClusterName, token: &str) -> String {
    format!("ct/{cluster}/{}", escape(token))
}
pub fn client_tokens_of(cluster: &ClusterName) -> String {
    format!("ct/{cluster}/")
}

pub fn task_definition(id: &TaskDefinitionId) -> String {
    format!("td/{}/{:010}", id.family, id.revision)
}
pub fn task_definitions_of(family: &Family) -> String {
    format!("td/{family}/")
}
pub fn task_definition_status(status: TaskDefinitionStatus, id: &TaskDefinitionId) -> String {
    format!("tds/{}/{}/{:010}", status.as_str(), id.family, id.revision)
}
pub fn task_definitions_by_status(status: TaskDefinitionStatus) -> String {
    format!("tds/{}/", status.as_str())
}
pub fn task_definitions_by_status_of(status: TaskDefinitionStatus, family: &Family) -> String {
    format!("tds/{}/{family}/", status.as_str())
}
/// Parses the `family/revision` tail of a `tds/` key.
pub fn parse_task_definition_status_key(key: &str) -> Option<TaskDefinitionId> {
    let mut parts = key.rsplitn(3, '/');
    let revision = parts.next()?.parse().ok()?;
    let family = Family::new(parts.next()?).ok()?;
    Some(TaskDefinitionId::new(family, revision))
}
pub fn family(family: &Family) -> String {
    format!("tdf/{family}")
}
pub const FAMILIES: &str = "tdf/";

pub fn service(cluster: &ClusterName, name: &ServiceName) -> String {
    format!("s/{cluster}/{name}")
}
pub fn services_of(cluster: &ClusterName) -> String {
    format!("s/{cluster}/")
}
pub const SERVICES: &str = "s/";

/// Bumped by every commit that starts or stops a service's tasks, so that two reconciles
/// of one service (an old and a new leader) cannot both act on the same reading.
pub fn service_generation(cluster: &ClusterName, name: &ServiceName) -> String {
    format!("sg/{cluster}/{name}")
}

pub fn service_deployment(cluster: &ClusterName, name: &ServiceName, id: &DeploymentId) -> String {
    format!("sd/{cluster}/{name}/{}", id.number())
}
pub fn service_deployments_of(cluster: &ClusterName, name: &ServiceName) -> String {
    format!("sd/{cluster}/{name}/")
}

pub fn tags(arn: &str) -> String {
    format!("tags/{arn}")
}

pub fn account_setting(principal: &str, name: &str) -> String {
    format!("as/{}/{name}", escape(principal))
}

pub fn meta(name: &str) -> String {
    format!("meta/{name}")
}

/// A ListTasks index dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskIndex {
    All,
    Family,
    StartedBy,
    Group,
    Instance,
    LaunchType,
}

impl TaskIndex {
    fn segment(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Family => "family",
            Self::StartedBy => "startedBy",
            Self::Group => "group",
            Self::Instance => "instance",
            Self::LaunchType => "launchType",
        }
    }
}

/// The prefix under which one index value's entries for one desired status sit.
pub fn task_index_prefix(
    cluster: &ClusterName,
    dim: TaskIndex,
    value: &str,
    desired: DesiredStatus,
) -> String {
    format!(
        "ti/{cluster}/{}/{}/{}/",
        dim.segment(),
        escape(value),
        desired.as_str()
    )
}

/// One index entry; ordered by creation time, then task id.
pub fn task_index_entry(
    cluster: &ClusterName,
    dim: TaskIndex,
    value: &str,
    desired: DesiredStatus,
    created: Timestamp,
    task: &TaskId,
) -> String {
    format!(
        "{}{:015}-{task}",
        task_index_prefix(cluster, dim, value, desired),
        created.millis().max(0)
    )
}

/// The task id at the end of an index entry.
pub fn task_from_index_entry(key: &str) -> Option<TaskId> {
    let tail = key.rsplit('/').next()?;
    let (_, id) = tail.split_once('-')?;
    TaskId::new(id).ok()
}

pub fn task_indexes_of(cluster: &ClusterName) -> String {
    format!("ti/{cluster}/")
}

/// Escapes `/` and `%` so free-form values (startedBy, groups, tokens) stay one key segment.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip_and_sort_by_creation() {
        let c = ClusterName::new("c").unwrap();
        let t = TaskId::new("abc").unwrap();
        let early = task_index_entry(
            &c,
            TaskIndex::StartedBy,
            "a/b%",
            DesiredStatus::Running,
            Timestamp::from_millis(5),
            &t,
        );
        assert_eq!(early, "ti/c/startedBy/a%2Fb%25/RUNNING/000000000000005-abc");
        assert_eq!(task_from_index_entry(&early), Some(t.clone()));
        let late = task_index_entry(
            &c,
            TaskIndex::StartedBy,
            "a/b%",
            DesiredStatus::Running,
            Timestamp::from_millis(40),
            &t,
        );
        assert!(early < late);
        assert!(early.starts_with(&task_index_prefix(
            &c,
            TaskIndex::StartedBy,
            "a/b%",
            DesiredStatus::Running
        )));
    }

    #[test]
    fn task_definition_keys_sort_by_revision() {
        let f = Family::new("web").unwrap();
        let k2 = task_definition(&TaskDefinitionId::new(f.clone(), 2));
        let k10 = task_definition(&TaskDefinitionId::new(f.clone(), 10));
        assert!(k2 < k10);
        let s = task_definition_status(
            TaskDefinitionStatus::Active,
            &TaskDefinitionId::new(f.clone(), 10),
        );
        assert_eq!(
            parse_task_definition_status_key(&s),
            Some(TaskDefinitionId::new(f, 10))
        );
    }
}

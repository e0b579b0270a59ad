//! Authorization of ECS operations: the one table of each operation's IAM action, the
//! resource(s) it acts on and the condition keys berth supplies, after the Service
//! Authorization Reference's "Actions, resources, and condition keys for Amazon Elastic
//! Container Service", and the checks a request turns into.
//!
//! - The resource is what the reference lists for the action (`cluster*`, `task-definition*`,
//!   `service*`, ...), `*` for actions without resource-level permissions (`ListClusters`,
//!   `RegisterTaskDefinition`, ...). `RunTask`/`StartTask` act on the task definition, the
//!   revision resolved first (the latest ACTIVE one when none is given, as ECS does since
//!   March 2024), with `ecs:cluster` naming the cluster.
//! - Condition keys: `ecs:cluster`, `ecs:task-definition`, `ecs:container-instances`,
//!   `aws:RequestTag/${TagKey}` and `aws:TagKeys` from the request's tags,
//!   `aws:ResourceTag/${TagKey}` from the resource's tags (read only when one of the caller's
//!   policies has such a condition), `ecs:CreateAction` for tag-on-create.
//! - Dependent actions: `iam:PassRole` (with `iam:PassedToService =
//!   ecs-tasks.amazonaws.com`) for each role a request hands to ECS (the task definition's
//!   `taskRoleArn`/`executionRoleArn`, `overrides.taskRoleArn`/`executionRoleArn`);
//!   `ecs:TagResource` on the new resource when a create request carries tags.
//! - Host-level access: launching tasks of a task definition that asks for privileged
//!   containers, host namespaces, a bind mount of `/` or the Docker socket, or added kernel
//!   capabilities (`berth_core::host_access`) also needs `berth:RunPrivilegedTask` on the
//!   cluster, with `berth:HostAccess` naming the kinds. It is checked at launch, against
//!   the caller who launches, not at registration: whoever registered the definition may
//!   not be whoever runs it.

use berth_core::host_access;
use berth_core::ids::{ServiceName, TaskDefinitionRef};
use berth_iam::{Caller, Check, ContextKeys};
use serde_json::Value;

use crate::aws_error::AwsError;
use crate::AppState;

/// Condition keys, as the reference spells them.
pub const ECS_CLUSTER: &str = "ecs:cluster";
pub const ECS_TASK_DEFINITION: &str = "ecs:task-definition";
pub const ECS_CONTAINER_INSTANCES: &str = "ecs:container-instances";
pub const RESOURCE_TAG: &str = "aws:ResourceTag/${TagKey}";
pub const REQUEST_TAG: &str = "aws:RequestTag/${TagKey}";
pub const TAG_KEYS: &str = "aws:TagKeys";
pub const PASSED_TO_SERVICE: &str = "iam:PassedToService";
pub const ECS_TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";

/// Where the resource ARN(s) of a request come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The action has no resource-level permissions: `*`.
    Any,
    /// The cluster named by `cluster` (default `default`).
    Cluster,
    /// The clusters of `clusters` (default `[default]`).
    Clusters,
    /// The task definition of `taskDefinition`, revision resolved.
    TaskDefinition,
    /// The task definitions of `taskDefinitions`.
    TaskDefinitions,
    /// The task of `task`, in `cluster`.
    Task,
    /// The tasks of `tasks`, in `cluster`.
    Tasks,
    /// The container instances of `containerInstances`, in `cluster`.
    ContainerInstances,
    /// `containerInstance` when given, else `*`.
    ContainerInstanceOrAny,
    /// The container instances `attributes[].targetId` name, in `cluster` (else the cluster).
    AttributeTargets,
    /// The service named by this member, in `cluster`.
    Service(&'static str),
    /// The services of `services`, in `cluster`.
    Services,
    /// `serviceDeploymentArn`.
    Deployment,
    /// `serviceDeploymentArns`.
    Deployments,
    /// `serviceRevisionArns`.
    Revisions,
    /// `resourceArn`.
    ResourceArn,
}

/// A resource a create request makes, for `ecs:TagResource` on tag-on-create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Cluster,
    TaskDefinition,
    Service,
    Task,
}

#[derive(Debug, Clone, Copy)]
pub struct EcsAction {
    pub operation: &'static str,
    /// The IAM action (`ecs:RunTask`).
    pub action: &'static str,
    pub resource: Resource,
    /// The condition keys berth supplies for this action.
    pub condition_keys: &'static [&'static str],
    /// The request can hand IAM roles to ECS (`iam:PassRole`).
    pub passes_roles: bool,
    /// The request creates this resource and may tag it (`ecs:TagResource`).
    pub creates: Option<Created>,
    /// The request launches tasks of its task definition (`berth:RunPrivilegedTask` when
    /// the definition asks for host-level access).
    pub launches: bool,
}

const fn a(
    operation: &'static str,
    action: &'static str,
    resource: Resource,
    condition_keys: &'static [&'static str],
) -> EcsAction {
    EcsAction {
        operation,
        action,
        resource,
        condition_keys,
        passes_roles: false,
        creates: None,
        launches: false,
    }
}

const fn launching(mut e: EcsAction) -> EcsAction {
    e.launches = true;
    e
}

const fn passing(mut e: EcsAction) -> EcsAction {
    e.passes_roles = true;
    e
}

const fn creating(mut e: EcsAction, c: Created) -> EcsAction {
    e.creates = Some(c);
    e
}

use Resource::*;

/// Every ECS operation berth serves.
pub const TABLE: &[EcsAction] = &[
    creating(
        a(
            "CreateCluster",
            "ecs:CreateCluster",
            Any,
            &[REQUEST_TAG, TAG_KEYS],
        ),
        Created::Cluster,
    ),
    a(
        "DescribeClusters",
        "ecs:DescribeClusters",
        Clusters,
        &[RESOURCE_TAG],
    ),
    a("ListClusters", "ecs:ListClusters", Any, &[]),
    a(
        "DeleteCluster",
        "ecs:DeleteCluster",
        Cluster,
        &[RESOURCE_TAG],
    ),
    a(
        "UpdateCluster",
        "ecs:UpdateCluster",
        Cluster,
        &[RESOURCE_TAG],
    ),
    a(
        "UpdateClusterSettings",
        "ecs:UpdateClusterSettings",
        Cluster,
        &[RESOURCE_TAG],
    ),
    creating(
        a(
            "RegisterTaskDefinition",
            "ecs:RegisterTaskDefinition",
            Any,
            &[REQUEST_TAG, TAG_KEYS],
        ),
        Created::TaskDefinition,
    ),
    a(
        "DescribeTaskDefinition",
        "ecs:DescribeTaskDefinition",
        Any,
        &[],
    ),
    a("ListTaskDefinitions", "ecs:ListTaskDefinitions", Any, &[]),
    a(
        "ListTaskDefinitionFamilies",
        "ecs:ListTaskDefinitionFamilies",
        Any,
        &[],
    ),
    a(
        "DeregisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        Any,
        &[],
    ),
    a(
        "DeleteTaskDefinitions",
        "ecs:DeleteTaskDefinitions",
        TaskDefinitions,
        &[RESOURCE_TAG],
    ),
    a(
        "RegisterContainerInstance",
        "ecs:RegisterContainerInstance",
        Cluster,
        &[REQUEST_TAG, TAG_KEYS, RESOURCE_TAG],
    ),
    a(
        "DeregisterContainerInstance",
        "ecs:DeregisterContainerInstance",
        Cluster,
        &[RESOURCE_TAG],
    ),
    a(
        "ListContainerInstances",
        "ecs:ListContainerInstances",
        Cluster,
        &[RESOURCE_TAG],
    ),
    a(
        "DescribeContainerInstances",
        "ecs:DescribeContainerInstances",
        ContainerInstances,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    creating(
        launching(passing(a(
            "RunTask",
            "ecs:RunTask",
            TaskDefinition,
            &[ECS_CLUSTER, REQUEST_TAG, TAG_KEYS, RESOURCE_TAG],
        ))),
        Created::Task,
    ),
    creating(
        launching(passing(a(
            "StartTask",
            "ecs:StartTask",
            TaskDefinition,
            &[
                ECS_CLUSTER,
                ECS_CONTAINER_INSTANCES,
                REQUEST_TAG,
                TAG_KEYS,
                RESOURCE_TAG,
            ],
        ))),
        Created::Task,
    ),
    a(
        "StopTask",
        "ecs:StopTask",
        Task,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "DescribeTasks",
        "ecs:DescribeTasks",
        Tasks,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "ListTasks",
        "ecs:ListTasks",
        ContainerInstanceOrAny,
        &[ECS_CLUSTER],
    ),
    a(
        "SubmitTaskStateChange",
        "ecs:SubmitTaskStateChange",
        Cluster,
        &[],
    ),
    creating(
        launching(passing(a(
            "CreateService",
            "ecs:CreateService",
            Service("serviceName"),
            &[ECS_CLUSTER, ECS_TASK_DEFINITION, REQUEST_TAG, TAG_KEYS],
        ))),
        Created::Service,
    ),
    launching(passing(a(
        "UpdateService",
        "ecs:UpdateService",
        Service("service"),
        &[ECS_CLUSTER, ECS_TASK_DEFINITION, RESOURCE_TAG],
    ))),
    a(
        "DescribeServices",
        "ecs:DescribeServices",
        Services,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a("ListServices", "ecs:ListServices", Any, &[ECS_CLUSTER]),
    a(
        "DeleteService",
        "ecs:DeleteService",
        Service("service"),
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "ListServiceDeployments",
        "ecs:ListServiceDeployments",
        Service("service"),
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "DescribeServiceDeployments",
        "ecs:DescribeServiceDeployments",
        Deployments,
        &[ECS_CLUSTER],
    ),
    a(
        "DescribeServiceRevisions",
        "ecs:DescribeServiceRevisions",
        Revisions,
        &[ECS_CLUSTER],
    ),
    a(
        "StopServiceDeployment",
        "ecs:StopServiceDeployment",
        Deployment,
        &[ECS_CLUSTER],
    ),
    a("PutAccountSetting", "ecs:PutAccountSetting", Any, &[]),
    a(
        "PutAccountSettingDefault",
        "ecs:PutAccountSettingDefault",
        Any,
        &[],
    ),
    a("DeleteAccountSetting", "ecs:DeleteAccountSetting", Any, &[]),
    a("ListAccountSettings", "ecs:ListAccountSettings", Any, &[]),
    a(
        "PutAttributes",
        "ecs:PutAttributes",
        AttributeTargets,
        &[ECS_CLUSTER],
    ),
    a(
        "DeleteAttributes",
        "ecs:DeleteAttributes",
        AttributeTargets,
        &[ECS_CLUSTER],
    ),
    a("ListAttributes", "ecs:ListAttributes", Cluster, &[]),
    a(
        "UpdateContainerInstancesState",
        "ecs:UpdateContainerInstancesState",
        ContainerInstances,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "UpdateContainerAgent",
        "ecs:UpdateContainerAgent",
        ContainerInstanceOrAny,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "UpdateTaskProtection",
        "ecs:UpdateTaskProtection",
        Tasks,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a(
        "GetTaskProtection",
        "ecs:GetTaskProtection",
        Tasks,
        &[ECS_CLUSTER, RESOURCE_TAG],
    ),
    a("DiscoverPollEndpoint", "ecs:DiscoverPollEndpoint", Any, &[]),
    a(
        "SubmitContainerStateChange",
        "ecs:SubmitContainerStateChange",
        Cluster,
        &[],
    ),
    a(
        "SubmitAttachmentStateChanges",
        "ecs:SubmitAttachmentStateChanges",
        Cluster,
        &[],
    ),
    a(
        "TagResource",
        "ecs:TagResource",
        ResourceArn,
        &[REQUEST_TAG, TAG_KEYS, RESOURCE_TAG],
    ),
    a(
        "UntagResource",
        "ecs:UntagResource",
        ResourceArn,
        &[TAG_KEYS, RESOURCE_TAG],
    ),
    a(
        "ListTagsForResource",
        "ecs:ListTagsForResource",
        ResourceArn,
        &[RESOURCE_TAG],
    ),
];

/// The table's entry for an operation.
pub fn lookup(operation: &str) -> Option<&'static EcsAction> {
    TABLE.iter().find(|e| e.operation == operation)
}

/// One authorization check a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCheck {
    pub action: String,
    pub resource: String,
    pub keys: ContextKeys,
}

/// Builds ECS ARNs of one region and account.
struct Arns<'a> {
    region: &'a str,
    account: &'a str,
}

impl Arns<'_> {
    fn arn(&self, rest: &str) -> String {
        format!("arn:aws:ecs:{}:{}:{rest}", self.region, self.account)
    }
    fn cluster_name<'v>(&self, given: Option<&'v str>) -> &'v str {
        let given = given
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        match given.split_once(":cluster/") {
            Some((_, name)) if given.starts_with("arn:") => name,
            _ => given,
        }
    }
    fn cluster(&self, given: Option<&str>) -> String {
        match given {
            Some(g) if g.starts_with("arn:") => g.to_string(),
            _ => self.arn(&format!("cluster/{}", self.cluster_name(given))),
        }
    }
    /// A cluster-scoped resource given by ARN or id.
    fn in_cluster(&self, kind: &str, cluster: &str, given: &str) -> String {
        if given.starts_with("arn:") {
            given.to_string()
        } else {
            self.arn(&format!("{kind}/{cluster}/{given}"))
        }
    }
    fn task_definition(&self, given: &str) -> String {
        if given.starts_with("arn:") {
            given.to_string()
        } else if given.contains(':') {
            self.arn(&format!("task-definition/{given}"))
        } else {
            // A family whose latest revision is not known (yet): every revision.
            self.arn(&format!("task-definition/{given}:*"))
        }
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The resources an operation acts on, from its request (task definitions not resolved).
fn resources(entry: &EcsAction, body: &Value, arns: &Arns<'_>) -> Vec<String> {
    let cluster_given = body["cluster"].as_str();
    let cluster = arns.cluster_name(cluster_given);
    let list = |member: &str, kind: &str| -> Vec<String> {
        strings(&body[member])
            .into_iter()
            .map(|s| arns.in_cluster(kind, cluster, s))
            .collect()
    };
    let out = match entry.resource {
        Any => vec!["*".to_string()],
        Cluster => vec![arns.cluster(cluster_given)],
        Clusters => {
            let given = strings(&body["clusters"]);
            if given.is_empty() {
                vec![arns.cluster(None)]
            } else {
                given.into_iter().map(|c| arns.cluster(Some(c))).collect()
            }
        }
        TaskDefinition => body["taskDefinition"]
            .as_str()
            .map(|t| vec![arns.task_definition(t)])
            .unwrap_or_default(),
        Task => body["task"]
            .as_str()
            .map(|t| vec![arns.in_cluster("task", cluster, t)])
            .unwrap_or_default(),
        TaskDefinitions => strings(&body["taskDefinitions"])
            .into_iter()
            .map(|t| arns.task_definition(t))
            .collect(),
        AttributeTargets => {
            let targets: Vec<String> = body["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["targetId"].as_str())
                .map(|t| arns.in_cluster("container-instance", cluster, t))
                .collect();
            if targets.is_empty() {
                vec![arns.cluster(cluster_given)]
            } else {
                targets
            }
        }
        Tasks => list("tasks", "task"),
        ContainerInstances => list("containerInstances", "container-instance"),
        ContainerInstanceOrAny => body["containerInstance"]
            .as_str()
            .map(|i| vec![arns.in_cluster("container-instance", cluster, i)])
            .unwrap_or_else(|| vec!["*".to_string()]),
        Service(member) => body[member]
            .as_str()
            .map(|s| vec![arns.in_cluster("service", cluster, s)])
            .unwrap_or_default(),
        Services => list("services", "service"),
        Deployment => body["serviceDeploymentArn"]
            .as_str()
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
        Deployments => strings(&body["serviceDeploymentArns"])
            .into_iter()
            .map(str::to_string)
            .collect(),
        Revisions => strings(&body["serviceRevisionArns"])
            .into_iter()
            .map(str::to_string)
            .collect(),
        ResourceArn => body["resourceArn"]
            .as_str()
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
    };
    if out.is_empty() {
        // A request without the member: the handler refuses it; the check is on `*`.
        vec!["*".to_string()]
    } else {
        out
    }
}

/// The condition keys a request supplies (apart from resource tags).
fn request_keys(entry: &EcsAction, body: &Value, arns: &Arns<'_>) -> ContextKeys {
    let mut keys = ContextKeys::new();
    let wants = |k: &str| entry.condition_keys.contains(&k);
    if wants(ECS_CLUSTER) {
        keys.set_one(ECS_CLUSTER, arns.cluster(body["cluster"].as_str()));
    }
    if wants(ECS_CONTAINER_INSTANCES) {
        let cluster = arns.cluster_name(body["cluster"].as_str());
        keys.set_many(
            ECS_CONTAINER_INSTANCES,
            strings(&body["containerInstances"])
                .into_iter()
                .map(|i| arns.in_cluster("container-instance", cluster, i))
                .collect(),
        );
    }
    if wants(ECS_TASK_DEFINITION) {
        if let Some(td) = body["taskDefinition"].as_str() {
            keys.set_one(ECS_TASK_DEFINITION, arns.task_definition(td));
        }
    }
    if wants(REQUEST_TAG) || wants(TAG_KEYS) {
        let mut tag_keys = Vec::new();
        if let Some(tags) = body["tags"].as_array() {
            for t in tags {
                if let (Some(k), Some(v)) = (t["key"].as_str(), t["value"].as_str()) {
                    if wants(REQUEST_TAG) {
                        keys.set_one(&format!("aws:RequestTag/{k}"), v);
                    }
                    tag_keys.push(k.to_string());
                }
            }
        }
        tag_keys.extend(strings(&body["tagKeys"]).into_iter().map(str::to_string));
        if wants(TAG_KEYS) && !tag_keys.is_empty() {
            keys.set_many(TAG_KEYS, tag_keys);
        }
    }
    keys
}

fn has_tags(body: &Value) -> bool {
    body["tags"].as_array().is_some_and(|t| !t.is_empty())
}

/// The checks a request needs. `full`: the caller has policies (not the root), so the
/// task definition is resolved and the roles it passes are checked; `resource_tags`: the
/// caller's policies test `aws:ResourceTag/...`, so the resources' tags are read.
pub async fn plan(
    state: &AppState,
    entry: &EcsAction,
    body: &Value,
    full: bool,
    resource_tags: bool,
) -> Vec<PlannedCheck> {
    let builder = state.control.arns();
    let arns = Arns {
        region: &builder.region,
        account: &builder.account,
    };
    let mut resources = resources(entry, body, &arns);
    let mut keys = request_keys(entry, body, &arns);
    let mut roles: Vec<String> = Vec::new();

    // Resolve the task definition (its latest revision, and the roles it carries).
    let mut resolved_td = None;
    let mut launched_document = None;
    if full && (entry.resource == TaskDefinition || entry.passes_roles) {
        if let Some(given) = body["taskDefinition"].as_str() {
            if let Ok(reference) = crate::ecs::parse::task_definition_ref(given) {
                if let Ok(record) = state.control.task_definitions.resolve(&reference).await {
                    if entry.launches {
                        launched_document = Some(record.document.clone());
                    }
                    let arn = builder.task_definition(&record.id);
                    for member in ["taskRoleArn", "executionRoleArn"] {
                        if let Some(r) = record.document[member].as_str() {
                            roles.push(r.to_string());
                        }
                    }
                    resolved_td = Some(arn);
                }
            }
        }
    }
    if let Some(td) = &resolved_td {
        if entry.resource == TaskDefinition {
            resources = vec![td.clone()];
        }
        if entry.condition_keys.contains(&ECS_TASK_DEFINITION) {
            keys.set_one(ECS_TASK_DEFINITION, td.clone());
        }
    }
    if entry.passes_roles {
        for member in ["taskRoleArn", "executionRoleArn"] {
            if let Some(r) = body["overrides"][member].as_str() {
                roles.push(r.to_string());
            }
        }
    }

    let mut checks = Vec::with_capacity(resources.len() + roles.len() + 1);
    for resource in resources {
        let mut k = keys.clone();
        if resource_tags && resource != "*" {
            if let Ok(tags) =
                berth_control::tags::of(state.control.ctx.store.as_ref(), &resource).await
            {
                for t in tags {
                    k.set_one(&format!("aws:ResourceTag/{}", t.key), t.value);
                }
            }
        }
        checks.push(PlannedCheck {
            action: entry.action.to_string(),
            resource,
            keys: k,
        });
    }
    if full && entry.launches {
        // UpdateService without a new task definition still launches the service's own
        // (scaling a privileged service out is running more privileged tasks).
        if launched_document.is_none() && entry.operation == "UpdateService" {
            launched_document = service_document(state, body).await;
        }
        let access = launched_document
            .as_ref()
            .map(host_access::required)
            .unwrap_or_default();
        if !access.is_empty() {
            let mut k = ContextKeys::new();
            k.set_one(ECS_CLUSTER, arns.cluster(body["cluster"].as_str()));
            if let Some(td) = &resolved_td {
                k.set_one(ECS_TASK_DEFINITION, td.clone());
            }
            k.set_many(
                host_access::HOST_ACCESS_CONDITION_KEY,
                access.iter().map(|a| a.as_str().to_string()).collect(),
            );
            checks.push(PlannedCheck {
                action: host_access::RUN_PRIVILEGED_TASK_ACTION.into(),
                resource: arns.cluster(body["cluster"].as_str()),
                keys: k,
            });
        }
    }
    if full {
        roles.sort();
        roles.dedup();
        for role in roles {
            let mut k = ContextKeys::new();
            k.set_one(PASSED_TO_SERVICE, ECS_TASKS_SERVICE);
            if let Some(td) = &resolved_td {
                k.set_one("iam:AssociatedResourceARN", td.clone());
            }
            checks.push(PlannedCheck {
                action: "iam:PassRole".into(),
                resource: role,
                keys: k,
            });
        }
    }
    if let (Some(created), true) = (entry.creates, has_tags(body)) {
        let cluster = arns.cluster_name(body["cluster"].as_str());
        let resource = match created {
            Created::Cluster => arns.arn(&format!(
                "cluster/{}",
                body["clusterName"].as_str().unwrap_or("default")
            )),
            Created::TaskDefinition => arns.task_definition(body["family"].as_str().unwrap_or("*")),
            Created::Service => arns.in_cluster(
                "service",
                cluster,
                body["serviceName"].as_str().unwrap_or("*"),
            ),
            Created::Task => arns.arn(&format!("task/{cluster}/*")),
        };
        let mut k = request_keys(entry, body, &arns);
        k.set_one("ecs:CreateAction", entry.operation);
        checks.push(PlannedCheck {
            action: "ecs:TagResource".into(),
            resource,
            keys: k,
        });
    }
    checks
}

/// The task definition document of the service an UpdateService names (None when there
/// is no such service: the handler says so).
async fn service_document(state: &AppState, body: &Value) -> Option<Value> {
    let cluster = crate::ecs::parse::cluster(&body["cluster"].as_str().map(str::to_string)).ok()?;
    let given = body["service"].as_str()?;
    // `arn:aws:ecs:region:account:service/cluster/name` or a name.
    let name = given.rsplit('/').next().unwrap_or(given);
    let name = ServiceName::new(name).ok()?;
    let found = state
        .control
        .services
        .describe(&cluster, std::slice::from_ref(&name), false)
        .await
        .ok()?;
    let view = found.into_iter().next()?.ok()?;
    let reference = TaskDefinitionRef::Revision(view.record.spec.task_definition.clone());
    let record = state
        .control
        .task_definitions
        .resolve(&reference)
        .await
        .ok()?;
    Some(record.document)
}

/// Authorizes an ECS request for `caller`; every decision is audited.
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    body: &[u8],
) -> Result<(), AwsError> {
    let Some(entry) = lookup(operation) else {
        if crate::ecs::SERVED.contains(&operation) {
            // Fail closed: a served operation missing from the table is a bug.
            return Err(AwsError::new(
                "AccessDeniedException",
                400,
                format!("berth has no authorization rule for ecs:{operation}."),
            ));
        }
        // Not an operation berth serves: the dispatcher says so.
        return Ok(());
    };
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let Ok(value) = serde_json::from_slice::<Value>(text) else {
        // Not JSON: the dispatcher refuses it (SerializationException) before it acts.
        return Ok(());
    };
    if !value.is_object() {
        return Ok(());
    }
    let set = state.iam.policy_set(caller);
    let resource_tags = set.as_ref().is_some_and(|s| s.uses_resource_tags);
    let checks = plan(state, entry, &value, set.is_some(), resource_tags).await;
    for c in &checks {
        state
            .iam
            .authorize_with(
                caller,
                set.as_deref(),
                &Check::new(&c.action, &c.resource, &c.keys),
            )
            .map_err(|d| AwsError::new("AccessDeniedException", 400, d.message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_iam::ContextValue;
    use serde_json::json;

    const ARNS: Arns<'static> = Arns {
        region: "us-east-1",
        account: "1",
    };

    #[test]
    fn every_served_operation_has_one_entry() {
        for op in crate::ecs::SERVED {
            let n = TABLE.iter().filter(|e| e.operation == *op).count();
            assert_eq!(n, 1, "{op}");
        }
        for e in TABLE {
            assert!(crate::ecs::SERVED.contains(&e.operation), "{}", e.operation);
            assert_eq!(e.action, format!("ecs:{}", e.operation));
            assert!(berth_wire::find_operation(berth_wire::ecs::OPERATIONS, e.operation).is_some());
        }
    }

    fn res(op: &str, body: Value) -> Vec<String> {
        resources(lookup(op).unwrap(), &body, &ARNS)
    }

    #[test]
    fn resources_follow_the_reference() {
        assert_eq!(res("ListClusters", json!({})), vec!["*"]);
        assert_eq!(
            res("DescribeClusters", json!({})),
            vec!["arn:aws:ecs:us-east-1:1:cluster/default"]
        );
        assert_eq!(
            res(
                "DescribeClusters",
                json!({"clusters": ["a", "arn:aws:ecs:us-east-1:1:cluster/b"]})
            ),
            vec![
                "arn:aws:ecs:us-east-1:1:cluster/a",
                "arn:aws:ecs:us-east-1:1:cluster/b"
            ]
        );
        assert_eq!(
            res(
                "RunTask",
                json!({"cluster": "a", "taskDefinition": "web:3"})
            ),
            vec!["arn:aws:ecs:us-east-1:1:task-definition/web:3"]
        );
        assert_eq!(
            res("RunTask", json!({"taskDefinition": "web"})),
            vec!["arn:aws:ecs:us-east-1:1:task-definition/web:*"]
        );
        assert_eq!(
            res(
                "CreateService",
                json!({"cluster": "arn:aws:ecs:us-east-1:1:cluster/a", "serviceName": "s"})
            ),
            vec!["arn:aws:ecs:us-east-1:1:service/a/s"]
        );
        assert_eq!(
            res(
                "DescribeTasks",
                json!({"cluster": "a", "tasks": ["t1", "arn:aws:ecs:us-east-1:1:task/a/t2"]})
            ),
            vec![
                "arn:aws:ecs:us-east-1:1:task/a/t1",
                "arn:aws:ecs:us-east-1:1:task/a/t2"
            ]
        );
        assert_eq!(
            res("StopTask", json!({"task": "t"})),
            vec!["arn:aws:ecs:us-east-1:1:task/default/t"]
        );
        assert_eq!(res("ListTasks", json!({"cluster": "a"})), vec!["*"]);
        assert_eq!(
            res(
                "ListTagsForResource",
                json!({"resourceArn": "arn:aws:ecs:us-east-1:1:cluster/a"})
            ),
            vec!["arn:aws:ecs:us-east-1:1:cluster/a"]
        );
        // Missing members: the check is on `*` and the handler refuses the request.
        assert_eq!(res("StopTask", json!({})), vec!["*"]);
    }

    #[test]
    fn condition_keys_from_the_request() {
        let k = request_keys(
            lookup("RunTask").unwrap(),
            &json!({"cluster": "a", "taskDefinition": "web", "tags": [{"key": "team", "value": "x"}]}),
            &ARNS,
        );
        assert_eq!(
            k.get("ecs:cluster"),
            Some(&ContextValue::One(
                "arn:aws:ecs:us-east-1:1:cluster/a".into()
            ))
        );
        assert_eq!(
            k.get("aws:RequestTag/team"),
            Some(&ContextValue::One("x".into()))
        );
        assert_eq!(
            k.get("aws:TagKeys"),
            Some(&ContextValue::Many(vec!["team".into()]))
        );
        let k = request_keys(
            lookup("UntagResource").unwrap(),
            &json!({"resourceArn": "x", "tagKeys": ["a", "b"]}),
            &ARNS,
        );
        assert_eq!(
            k.get("aws:TagKeys"),
            Some(&ContextValue::Many(vec!["a".into(), "b".into()]))
        );
        assert!(k.get("aws:RequestTag/a").is_none());
        // Operations without ecs:cluster do not get it.
        let k = request_keys(
            lookup("ListClusters").unwrap(),
            &json!({"cluster": "a"}),
            &ARNS,
        );
        assert!(k.get("ecs:cluster").is_none());
    }
}

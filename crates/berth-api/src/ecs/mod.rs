//! Amazon ECS (`AmazonEC2ContainerServiceV20141113`, JSON 1.1): one module per resource;
//! each parses its requests into berth's typed domain, calls the control plane and renders
//! the result as ECS documents.

mod account;
mod clusters;
mod instances;
pub mod parse;
pub mod render;
pub mod services;
mod tags;
pub mod task_definitions;
mod tasks;

use berth_control::ControlPlane;
use berth_core::{Error, ErrorKind};

use crate::json::{output, parse as body};

pub use berth_wire::ecs::TARGET_PREFIX;

/// Runs one ECS operation on a JSON body.
pub async fn dispatch(
    cp: &ControlPlane,
    endpoint: &str,
    operation: &str,
    input: &[u8],
) -> Result<serde_json::Value, Error> {
    match operation {
        "CreateCluster" => output(clusters::create(cp, body(input)?).await),
        "DescribeClusters" => output(clusters::describe(cp, body(input)?).await),
        "ListClusters" => output(clusters::list(cp, body(input)?).await),
        "DeleteCluster" => output(clusters::delete(cp, body(input)?).await),
        "UpdateCluster" => output(clusters::update(cp, body(input)?).await),
        "UpdateClusterSettings" => output(clusters::update_settings(cp, body(input)?).await),
        "RegisterTaskDefinition" => output(task_definitions::register(cp, body(input)?).await),
        "DescribeTaskDefinition" => output(task_definitions::describe(cp, body(input)?).await),
        "ListTaskDefinitions" => output(task_definitions::list(cp, body(input)?).await),
        "ListTaskDefinitionFamilies" => output(task_definitions::families(cp, body(input)?).await),
        "DeregisterTaskDefinition" => output(task_definitions::deregister(cp, body(input)?).await),
        "RegisterContainerInstance" => output(instances::register(cp, body(input)?).await),
        "DeregisterContainerInstance" => output(instances::deregister(cp, body(input)?).await),
        "ListContainerInstances" => output(instances::list(cp, body(input)?).await),
        "DescribeContainerInstances" => output(instances::describe(cp, body(input)?).await),
        "RunTask" => output(tasks::run(cp, body(input)?).await),
        "StartTask" => output(tasks::start(cp, body(input)?).await),
        "StopTask" => output(tasks::stop(cp, body(input)?).await),
        "DescribeTasks" => output(tasks::describe(cp, body(input)?).await),
        "ListTasks" => output(tasks::list(cp, body(input)?).await),
        "SubmitTaskStateChange" => output(tasks::submit_state_change(cp, body(input)?).await),
        "CreateService" => output(services::create(cp, body(input)?).await),
        "UpdateService" => output(services::update(cp, body(input)?).await),
        "DescribeServices" => output(services::describe(cp, body(input)?).await),
        "ListServices" => output(services::list(cp, body(input)?).await),
        "DeleteService" => output(services::delete(cp, body(input)?).await),
        "ListServiceDeployments" => output(services::list_deployments(cp, body(input)?).await),
        "DescribeServiceDeployments" => {
            output(services::describe_deployments(cp, body(input)?).await)
        }
        "StopServiceDeployment" => output(services::stop_deployment(cp, body(input)?).await),
        "DescribeServiceRevisions" => output(services::describe_revisions(cp, body(input)?).await),
        "PutAccountSetting" => output(account::put_setting(cp, body(input)?).await),
        "PutAccountSettingDefault" => output(account::put_setting_default(cp, body(input)?).await),
        "DeleteAccountSetting" => output(account::delete_setting(cp, body(input)?).await),
        "ListAccountSettings" => output(account::list_settings(cp, body(input)?).await),
        "PutAttributes" => output(account::put_attributes(cp, body(input)?).await),
        "DeleteAttributes" => output(account::delete_attributes(cp, body(input)?).await),
        "ListAttributes" => output(account::list_attributes(cp, body(input)?).await),
        "UpdateContainerInstancesState" => {
            output(account::update_instances_state(cp, body(input)?).await)
        }
        "UpdateContainerAgent" => output(account::update_agent(cp, body(input)?).await),
        "UpdateTaskProtection" => output(account::update_task_protection(cp, body(input)?).await),
        "GetTaskProtection" => output(account::get_task_protection(cp, body(input)?).await),
        "DeleteTaskDefinitions" => output(account::delete_task_definitions(cp, body(input)?).await),
        "DiscoverPollEndpoint" => {
            output(account::discover_poll_endpoint(endpoint, body(input)?).await)
        }
        "SubmitContainerStateChange" => {
            output(account::submit_container_state_change(cp, body(input)?).await)
        }
        "SubmitAttachmentStateChanges" => {
            output(account::submit_attachment_state_changes(cp, body(input)?).await)
        }
        "TagResource" => output(tags::tag(cp, body(input)?).await),
        "UntagResource" => output(tags::untag(cp, body(input)?).await),
        "ListTagsForResource" => output(tags::list(cp, body(input)?).await),
        other => Err(Error::new(
            ErrorKind::UnknownOperation,
            if berth_wire::find_operation(berth_wire::ecs::OPERATIONS, other).is_some() {
                format!("Operation {other} is not supported by berth yet.")
            } else {
                format!("Unknown operation: {other}")
            },
        )),
    }
}

/// Every ECS operation berth serves.
pub const SERVED: &[&str] = &[
    "CreateCluster",
    "DescribeClusters",
    "ListClusters",
    "DeleteCluster",
    "UpdateCluster",
    "UpdateClusterSettings",
    "RegisterTaskDefinition",
    "DescribeTaskDefinition",
    "ListTaskDefinitions",
    "ListTaskDefinitionFamilies",
    "DeregisterTaskDefinition",
    "RegisterContainerInstance",
    "DeregisterContainerInstance",
    "ListContainerInstances",
    "DescribeContainerInstances",
    "RunTask",
    "StartTask",
    "StopTask",
    "DescribeTasks",
    "ListTasks",
    "SubmitTaskStateChange",
    "CreateService",
    "UpdateService",
    "DescribeServices",
    "ListServices",
    "DeleteService",
    "ListServiceDeployments",
    "DescribeServiceDeployments",
    "DescribeServiceRevisions",
    "StopServiceDeployment",
    "PutAccountSetting",
    "PutAccountSettingDefault",
    "DeleteAccountSetting",
    "ListAccountSettings",
    "PutAttributes",
    "DeleteAttributes",
    "ListAttributes",
    "UpdateContainerInstancesState",
    "UpdateContainerAgent",
    "UpdateTaskProtection",
    "GetTaskProtection",
    "DeleteTaskDefinitions",
    "DiscoverPollEndpoint",
    "SubmitContainerStateChange",
    "SubmitAttachmentStateChanges",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

#[cfg(test)]
mod tests {
    use super::SERVED;

    /// The match arms of `dispatch`, read from this file: `SERVED` must name exactly them.
    fn dispatched() -> std::collections::BTreeSet<&'static str> {
        let source = include_str!("mod.rs");
        let body = &source[source.find("match operation {").expect("dispatch")..];
        let body = &body[..body.find("\n    }\n").expect("end of match")];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split_once("\" =>").map(|(op, _)| op))
            .collect()
    }

    #[test]
    fn served_is_the_dispatch_table_and_in_the_model() {
        let served: std::collections::BTreeSet<_> = SERVED.iter().copied().collect();
        assert_eq!(served.len(), SERVED.len(), "duplicates in SERVED");
        assert_eq!(served, dispatched());
        let model: std::collections::BTreeSet<_> =
            berth_wire::ecs::OPERATIONS.iter().map(|o| o.name).collect();
        assert!(served.is_subset(&model), "{:?}", served.difference(&model));
    }
}

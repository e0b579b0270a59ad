//! ECS ARNs: `arn:aws:ecs:<region>:<account>:<kind>/<resource>`.

use crate::ids::{
    ClusterName, ContainerId, DeploymentId, InstanceId, ServiceName, TaskDefinitionId, TaskId,
};
use crate::Error;

/// The ECS resource types berth names with ARNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Cluster,
    TaskDefinition,
    Task,
    ContainerInstance,
    Container,
    Service,
    ServiceDeployment,
    ServiceRevision,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::TaskDefinition => "task-definition",
            Self::Task => "task",
            Self::ContainerInstance => "container-instance",
            Self::Container => "container",
            Self::Service => "service",
            Self::ServiceDeployment => "service-deployment",
            Self::ServiceRevision => "service-revision",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cluster" => Self::Cluster,
            "task-definition" => Self::TaskDefinition,
            "task" => Self::Task,
            "container-instance" => Self::ContainerInstance,
            "container" => Self::Container,
            "service" => Self::Service,
            "service-deployment" => Self::ServiceDeployment,
            "service-revision" => Self::ServiceRevision,
            _ => return None,
        })
    }
}

/// A parsed ECS ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub kind: ResourceKind,
    /// Everything after `<kind>/`, e.g. `demo/2f0c…` for a task in cluster demo.
    pub resource: String,
}

impl Arn {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::invalid(format!("Invalid ARN: {s}"));
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let (kind, resource) = rest.split_once('/').ok_or_else(bad)?;
        let kind = ResourceKind::parse(kind).ok_or_else(bad)?;
        if resource.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            region: region.to_string(),
            account: account.to_string(),
            kind,
            resource: resource.to_string(),
        })
    }

    /// The resource path split on `/`: `[cluster, id]` for a task, `[name]` for a cluster.
    pub fn segments(&self) -> Vec<&str> {
        self.resource.split('/').collect()
    }
}

/// Something a request names either by ARN or by short name/id.
pub fn is_arn(s: &str) -> bool {
    s.starts_with("arn:")
}

/// Builds ARNs for one region and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnBuilder {
    pub region: String,
    pub account: String,
}

impl ArnBuilder {
    pub fn new(region: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            account: account.into(),
        }
    }
    fn build(&self, kind: ResourceKind, resource: std::fmt::Arguments<'_>) -> String {
        format!(
            "arn:aws:ecs:{}:{}:{}/{}",
            self.region,
            self.account,
            kind.as_str(),
            resource
        )
    }
    pub fn cluster(&self, name: &ClusterName) -> String {
        self.build(ResourceKind::Cluster, format_args!("{name}"))
    }
    pub fn task_definition(&self, id: &TaskDefinitionId) -> String {
        self.build(ResourceKind::TaskDefinition, format_args!("{id}"))
    }
    pub fn task(&self, cluster: &ClusterName, id: &TaskId) -> String {
        self.build(ResourceKind::Task, format_args!("{cluster}/{id}"))
    }
    pub fn container_instance(&self, cluster: &ClusterName, id: &InstanceId) -> String {
        self.build(
            ResourceKind::ContainerInstance,
            format_args!("{cluster}/{id}"),
        )
    }
    pub fn container(&self, cluster: &ClusterName, id: &ContainerId) -> String {
        self.build(ResourceKind::Container, format_args!("{cluster}/{id}"))
    }
    pub fn service(&self, cluster: &ClusterName, name: &ServiceName) -> String {
        self.build(ResourceKind::Service, format_args!("{cluster}/{name}"))
    }
    pub fn service_deployment(
        &self,
        cluster: &ClusterName,
        service: &ServiceName,
        id: &DeploymentId,
    ) -> String {
        self.build(
            ResourceKind::ServiceDeployment,
            format_args!("{cluster}/{service}/{}", id.number()),
        )
    }
    /// Berth's service revisions are its deployments: one revision per deployment.
    pub fn service_revision(
        &self,
        cluster: &ClusterName,
        service: &ServiceName,
        id: &DeploymentId,
    ) -> String {
        self.build(
            ResourceKind::ServiceRevision,
            format_args!("{cluster}/{service}/{}", id.number()),
        )
    }
    /// The common prefix of every ARN of `kind` in `cluster` (`…:task/<cluster>/`).
    pub fn in_cluster_prefix(&self, kind: ResourceKind, cluster: &ClusterName) -> String {
        self.build(kind, format_args!("{cluster}/"))
    }
    /// The IAM principal berth reports as `registeredBy` and the like.
    pub fn account_root(&self) -> String {
        format!("arn:aws:iam::{}:root", self.account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_task_arn() {
        let b = ArnBuilder::new("us-east-1", "000000000000");
        let cluster = ClusterName::new("demo").unwrap();
        let arn = b.task(&cluster, &TaskId::new("abc").unwrap());
        assert_eq!(arn, "arn:aws:ecs:us-east-1:000000000000:task/demo/abc");
        let parsed = Arn::parse(&arn).unwrap();
        assert_eq!(parsed.kind, ResourceKind::Task);
        assert_eq!(parsed.segments(), vec!["demo", "abc"]);
    }

    #[test]
    fn rejects_non_ecs_arns() {
        assert!(Arn::parse("arn:aws:s3:::bucket").is_err());
        assert!(Arn::parse("demo").is_err());
        assert!(Arn::parse("arn:aws:ecs:r:a:widget/x").is_err());
        assert!(Arn::parse("arn:aws:ecs:r:a:cluster/").is_err());
    }
}

use crate::ApiError;

/// The ECS resource types berth names with ARNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Cluster,
    TaskDefinition,
    Task,
    ContainerInstance,
    Container,
}

impl ResourceKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::TaskDefinition => "task-definition",
            Self::Task => "task",
            Self::ContainerInstance => "container-instance",
            Self::Container => "container",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cluster" => Self::Cluster,
            "task-definition" => Self::TaskDefinition,
            "task" => Self::Task,
            "container-instance" => Self::ContainerInstance,
            "container" => Self::Container,
            _ => return None,
        })
    }
}

/// A parsed ECS ARN: `arn:aws:ecs:<region>:<account>:<kind>/<resource>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub kind: ResourceKind,
    /// Everything after `<kind>/`, e.g. `demo/2f0c…` for a task in cluster demo.
    pub resource: String,
}

impl Arn {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid(format!("Invalid ARN: {s}"));
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

    /// The last path segment: a task id, instance id, cluster name or `family:revision`.
    pub fn last_segment(&self) -> &str {
        self.resource.rsplit('/').next().unwrap_or(&self.resource)
    }
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
    fn build(&self, kind: ResourceKind, resource: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:{}/{}",
            self.region,
            self.account,
            kind.as_str(),
            resource
        )
    }
    pub fn cluster(&self, name: &str) -> String {
        self.build(ResourceKind::Cluster, name)
    }
    pub fn task_definition(&self, family: &str, revision: i64) -> String {
        self.build(
            ResourceKind::TaskDefinition,
            &format!("{family}:{revision}"),
        )
    }
    pub fn task(&self, cluster: &str, id: &str) -> String {
        self.build(ResourceKind::Task, &format!("{cluster}/{id}"))
    }
    pub fn container_instance(&self, cluster: &str, id: &str) -> String {
        self.build(ResourceKind::ContainerInstance, &format!("{cluster}/{id}"))
    }
    pub fn container(&self, cluster: &str, id: &str) -> String {
        self.build(ResourceKind::Container, &format!("{cluster}/{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_task_arn() {
        let b = ArnBuilder::new("us-east-1", "000000000000");
        let arn = b.task("demo", "abc");
        assert_eq!(arn, "arn:aws:ecs:us-east-1:000000000000:task/demo/abc");
        let parsed = Arn::parse(&arn).unwrap();
        assert_eq!(parsed.kind, ResourceKind::Task);
        assert_eq!(parsed.resource, "demo/abc");
        assert_eq!(parsed.last_segment(), "abc");
    }

    #[test]
    fn rejects_non_ecs_arns() {
        assert!(Arn::parse("arn:aws:s3:::bucket").is_err());
        assert!(Arn::parse("demo").is_err());
        assert!(Arn::parse("arn:aws:ecs:r:a:widget/x").is_err());
        assert!(Arn::parse("arn:aws:ecs:r:a:cluster/").is_err());
    }
}

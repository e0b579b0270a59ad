//! Task placement engine with Amazon ECS semantics.
//!
//! The scheduler is a pure function: given a snapshot of container instances
//! (remaining resources, attributes, running tasks) and a placement request,
//! [`place`] returns where each task goes and, if some cannot be placed, the
//! per-instance failure reasons in ECS's wire format. There is no I/O and no
//! clock; randomness comes from the caller's RNG so tests can seed it.

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

mod placement;
pub mod query;

pub use placement::{place, validate, MAX_CONSTRAINTS, MAX_STRATEGIES};
pub use query::Expression;

/// CPU units, memory (MiB) and host ports.
///
/// For an instance's *remaining* resources, `tcp_ports`/`udp_ports` are the
/// host ports already in use on that instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU units (1024 = one vCPU).
    pub cpu: i64,
    /// Memory in MiB.
    pub memory: i64,
    /// TCP host ports (reserved ports when describing remaining resources).
    pub tcp_ports: BTreeSet<u16>,
    /// UDP host ports (reserved ports when describing remaining resources).
    pub udp_ports: BTreeSet<u16>,
}

/// What the scheduler needs to know about one container instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceSnapshot {
    /// Container instance ARN; reported in placements and failures.
    pub arn: String,
    /// EC2-instance-like id: the unit of `spread` on `instanceId`/`host` and
    /// the `ec2InstanceId` query subject.
    pub instance_id: String,
    /// Built-in (`ecs.instance-type`, `ecs.availability-zone`, `ecs.os-type`, ...)
    /// and custom attributes.
    pub attributes: BTreeMap<String, String>,
    /// Resources still available; ports are the ones already in use.
    pub remaining: Resources,
    /// Whether the agent is connected; disconnected instances get no tasks.
    pub agent_connected: bool,
    /// Agent version, e.g. `1.80.0` (the `agentVersion` query subject).
    pub agent_version: String,
    /// Registration time in epoch seconds (the `registeredAt` query subject).
    pub registered_at: f64,
    /// Live tasks (any state except STOPPED) on the instance, counted per ECS task group
    /// (`family:web`, `service:api`).
    pub task_groups: BTreeMap<String, usize>,
}

impl InstanceSnapshot {
    /// How many live tasks the instance has.
    pub fn task_count(&self) -> usize {
        self.task_groups.values().sum()
    }
}

/// Transport protocol of a host port mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A host port a task needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PortRequest {
    /// Host port; 0 means a dynamic port, which never conflicts.
    pub host_port: u16,
    /// Protocol the port is bound with.
    pub protocol: Protocol,
}

/// An ECS placement constraint, using ECS wire names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementConstraint {
    /// `distinctInstance` or `memberOf`.
    pub kind: String,
    /// Cluster query expression; required for `memberOf`, forbidden for
    /// `distinctInstance`.
    pub expression: Option<String>,
}

/// An ECS placement strategy, using ECS wire names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementStrategy {
    /// `binpack`, `spread` or `random`.
    pub kind: String,
    /// `cpu`/`memory` for binpack; `instanceId`, `host` or `attribute:<name>`
    /// for spread; ignored for random.
    pub field: Option<String>,
}

/// Everything needed to place `count` identical tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementRequest {
    /// Number of tasks to place.
    pub count: usize,
    /// CPU units reserved per task.
    pub cpu: i64,
    /// Memory (MiB) reserved per task: the sum of the containers' `memory`
    /// or `memoryReservation`, computed by the caller.
    pub memory: i64,
    /// Host ports each task binds.
    pub ports: Vec<PortRequest>,
    /// ECS task group of the new tasks, e.g. `family:web` or `service:api`.
    pub group: String,
    /// ARN of the task definition being placed.
    pub task_definition_arn: String,
    /// Task definition `requiresAttributes`: name and optional exact value.
    pub required_attributes: Vec<(String, Option<String>)>,
    /// Placement constraints (at most [`MAX_CONSTRAINTS`]).
    pub constraints: Vec<PlacementConstraint>,
    /// Placement strategies, applied in order (at most [`MAX_STRATEGIES`]).
    pub strategy: Vec<PlacementStrategy>,
}

/// One placed task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// ARN of the container instance the task goes to.
    pub instance_arn: String,
}

/// Why a task could not be placed, in the shape of an ECS `Failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementFailure {
    /// Container instance ARN the reason applies to; `None` when the cluster
    /// has no instances at all.
    pub arn: Option<String>,
    /// ECS reason string, see [`reason`].
    pub reason: String,
}

/// Result of a placement run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Placed tasks, in placement order.
    pub placements: Vec<Placement>,
    /// Per-instance reasons why the first unplaceable task did not fit.
    /// Empty when every task was placed.
    pub failures: Vec<PlacementFailure>,
    /// Number of tasks that could not be placed.
    pub unplaced: usize,
}

/// ECS failure reason strings reported in [`PlacementFailure::reason`].
pub mod reason {
    /// The instance's agent is disconnected.
    pub const AGENT: &str = "AGENT";
    /// The instance lacks a required attribute.
    pub const ATTRIBUTE: &str = "ATTRIBUTE";
    /// Not enough CPU left.
    pub const CPU: &str = "RESOURCE:CPU";
    /// Not enough memory left.
    pub const MEMORY: &str = "RESOURCE:MEMORY";
    /// A requested host port is already in use.
    pub const PORTS: &str = "RESOURCE:PORTS";
    /// A `memberOf` expression is false for the instance.
    pub const MEMBER_OF: &str = "MemberOf placement constraint unsatisfied.";
    /// The instance already runs a task of the same group.
    pub const DISTINCT_INSTANCE: &str = "DistinctInstance placement constraint unsatisfied.";
    /// The cluster has no instances (reported with `arn: None`).
    pub const NO_INSTANCES: &str = "No Container Instances were found in your cluster.";
}

/// A request the scheduler rejects before placing anything; the message is
/// meant for an ECS `InvalidParameterException`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// A placement constraint is malformed (unknown type, bad expression, ...).
    InvalidConstraint(String),
    /// A placement strategy is malformed (unknown type or field, ...).
    InvalidStrategy(String),
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConstraint(message) | Self::InvalidStrategy(message) => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for PlacementError {}

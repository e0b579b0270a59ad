//! The placement engine: filters instances, ranks candidates by the request's
//! strategies and places tasks one at a time.

use std::cmp::Ordering;
use std::collections::HashMap;

use rand::Rng;

use crate::query::{Expression, InstanceFacts};
use crate::{
    reason, InstanceSnapshot, Placement, PlacementConstraint, PlacementError, PlacementFailure,
    PlacementRequest, PlacementStrategy, Plan, PortRequest, Protocol,
};

/// Most placement constraints a request may carry (ECS limit).
pub const MAX_CONSTRAINTS: usize = 10;
/// Most placement strategies a request may carry (ECS limit).
pub const MAX_STRATEGIES: usize = 5;

/// Places `req.count` tasks on `instances` with ECS semantics.
///
/// Tasks are placed one at a time and each placement updates the chosen
/// instance (resources, ports, task groups), so binpack fills an instance
/// before the next, spread alternates and `distinctInstance` sees earlier
/// placements of the same plan. When a task fits nowhere, placing stops (the
/// remaining tasks are identical): `unplaced` counts the rest and `failures`
/// holds one ECS reason per instance. With no instances at all, `failures` is
/// a single entry with `arn: None`.
///
/// Strategies rank candidates lexicographically in order; remaining ties are
/// broken uniformly with `rng`. `random` (and an empty strategy list) is that
/// uniform tie-break, so strategies after a `random` have no effect.
///
/// # Errors
/// Malformed constraints or strategies (see [`validate`]).
pub fn place<R: Rng + ?Sized>(
    instances: &[InstanceSnapshot],
    req: &PlacementRequest,
    rng: &mut R,
) -> Result<Plan, PlacementError> {
    let rules = Rules::compile(&req.constraints, &req.strategy)?;
    let mut plan = Plan::default();
    if req.count == 0 {
        return Ok(plan);
    }
    if instances.is_empty() {
        plan.failures.push(PlacementFailure {
            arn: None,
            reason: reason::NO_INSTANCES.to_string(),
        });
        plan.unplaced = req.count;
        return Ok(plan);
    }

    let filter = Filter::new(req, &rules);
    let mut slots: Vec<Slot<'_>> = instances
        .iter()
        .map(|instance| Slot::new(instance, &req.group))
        .collect();
    let mut spreads: Vec<AttributeSpread> = rules
        .spread_attributes
        .iter()
        .map(|name| AttributeSpread::new(name, &slots))
        .collect();
    for slot in &mut slots {
        slot.rejection = filter.check(slot);
    }

    let mut ties = Vec::new();
    for placed in 0..req.count {
        let Some(chosen) = choose(&slots, &spreads, &rules.ranking, rng, &mut ties) else {
            plan.unplaced = req.count - placed;
            plan.failures = slots
                .iter()
                .filter_map(|slot| {
                    slot.rejection.map(|rejection| PlacementFailure {
                        arn: Some(slot.instance.arn.clone()),
                        reason: rejection.reason().to_string(),
                    })
                })
                .collect();
            break;
        };
        let slot = &mut slots[chosen];
        slot.remaining_cpu -= req.cpu;
        slot.remaining_memory -= req.memory;
        slot.planned_tasks += 1;
        slot.group_tasks += 1;
        // Only the chosen instance changed, so only its verdict can change.
        slot.rejection = filter.check(slot);
        for spread in &mut spreads {
            spread.group_tasks[spread.bucket_of_instance[chosen]] += 1;
        }
        plan.placements.push(Placement {
            instance_arn: slot.instance.arn.clone(),
        });
    }
    Ok(plan)
}

/// Checks constraints and strategies without placing anything, e.g. to
/// reject a CreateService call up front.
///
/// # Errors
/// [`PlacementError::InvalidConstraint`] for more than [`MAX_CONSTRAINTS`]
/// constraints, an unknown type, a `memberOf` without (or with an invalid)
/// expression, or a `distinctInstance` with one;
/// [`PlacementError::InvalidStrategy`] for more than [`MAX_STRATEGIES`]
/// strategies, an unknown type or an unsupported field.
pub fn validate(
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
) -> Result<(), PlacementError> {
    Rules::compile(constraints, strategies).map(|_| ())
}

/// One ranking criterion; smaller keys win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RankKey {
    LeastRemainingCpu,
    LeastRemainingMemory,
    FewestGroupTasksOnInstance,
    /// Index into `Rules::spread_attributes`.
    FewestGroupTasksInAttributeValue(usize),
}

/// Constraints and strategies, validated and compiled once per request.
#[derive(Debug)]
struct Rules {
    member_of: Vec<Expression>,
    distinct_instance: bool,
    ranking: Vec<RankKey>,
    spread_attributes: Vec<String>,
}

impl Rules {
    fn compile(
        constraints: &[PlacementConstraint],
        strategies: &[PlacementStrategy],
    ) -> Result<Self, PlacementError> {
        let mut rules = Self {
            member_of: Vec::new(),
            distinct_instance: false,
            ranking: Vec::new(),
            spread_attributes: Vec::new(),
        };
        if constraints.len() > MAX_CONSTRAINTS {
            return Err(PlacementError::InvalidConstraint(format!(
                "At most {MAX_CONSTRAINTS} placement constraints are allowed, got {}.",
                constraints.len()
            )));
        }
        if strategies.len() > MAX_STRATEGIES {
            return Err(PlacementError::InvalidStrategy(format!(
                "At most {MAX_STRATEGIES} placement strategies are allowed, got {}.",
                strategies.len()
            )));
        }
        for constraint in constraints {
            let expression = constraint
                .expression
                .as_deref()
                .filter(|expression| !expression.trim().is_empty());
            match (constraint.kind.as_str(), expression) {
                ("distinctInstance", None) => rules.distinct_instance = true,
                ("distinctInstance", Some(_)) => {
                    return Err(PlacementError::InvalidConstraint(
                        "An expression cannot be specified for a distinctInstance placement constraint."
                            .to_string(),
                    ))
                }
                ("memberOf", Some(expression)) => {
                    rules.member_of.push(Expression::parse(expression)?);
                }
                ("memberOf", None) => {
                    return Err(PlacementError::InvalidConstraint(
                        "An expression is required for a memberOf placement constraint."
                            .to_string(),
                    ))
                }
                (kind, _) => {
                    return Err(PlacementError::InvalidConstraint(format!(
                        "Unknown placement constraint type {kind:?}; expected distinctInstance or memberOf."
                    )))
                }
            }
        }
        // A random key makes every later key irrelevant, and uniform
        // tie-breaking already is random, so ranking stops at the first random.
        let mut ranking_done = false;
        for strategy in strategies {
            let key = rules.strategy_key(strategy)?;
            match key {
                None => ranking_done = true,
                Some(key) if !ranking_done => rules.ranking.push(key),
                Some(_) => {}
            }
        }
        Ok(rules)
    }

    /// Validates one strategy; `None` means `random`.
    fn strategy_key(
        &mut self,
        strategy: &PlacementStrategy,
    ) -> Result<Option<RankKey>, PlacementError> {
        let field = strategy.field.as_deref().map(str::trim);
        match strategy.kind.as_str() {
            "random" => Ok(None),
            "binpack" => match field {
                Some(field) if field.eq_ignore_ascii_case("cpu") => {
                    Ok(Some(RankKey::LeastRemainingCpu))
                }
                Some(field) if field.eq_ignore_ascii_case("memory") => {
                    Ok(Some(RankKey::LeastRemainingMemory))
                }
                _ => Err(PlacementError::InvalidStrategy(format!(
                    "The binpack placement strategy requires field cpu or memory, got {}.",
                    describe_field(field)
                ))),
            },
            "spread" => match field {
                Some(field)
                    if field.eq_ignore_ascii_case("instanceId")
                        || field.eq_ignore_ascii_case("host") =>
                {
                    Ok(Some(RankKey::FewestGroupTasksOnInstance))
                }
                Some(field) => match attribute_name(field) {
                    Some(name) => {
                        let index = self.spread_attribute_index(name);
                        Ok(Some(RankKey::FewestGroupTasksInAttributeValue(index)))
                    }
                    None => Err(invalid_spread_field(Some(field))),
                },
                None => Err(invalid_spread_field(None)),
            },
            kind => Err(PlacementError::InvalidStrategy(format!(
                "Unknown placement strategy type {kind:?}; expected binpack, spread or random."
            ))),
        }
    }

    /// Shares one set of per-value counts between strategies spreading on the
    /// same attribute.
    fn spread_attribute_index(&mut self, name: &str) -> usize {
        match self
            .spread_attributes
            .iter()
            .position(|known| known == name)
        {
            Some(index) => index,
            None => {
                self.spread_attributes.push(name.to_string());
                self.spread_attributes.len() - 1
            }
        }
    }
}

fn attribute_name(field: &str) -> Option<&str> {
    const PREFIX: &str = "attribute:";
    let head = field.get(..PREFIX.len())?;
    let name = &field[PREFIX.len()..];
    (head.eq_ignore_ascii_case(PREFIX) && !name.is_empty()).then_some(name)
}

fn invalid_spread_field(field: Option<&str>) -> PlacementError {
    PlacementError::InvalidStrategy(format!(
        "The spread placement strategy requires field instanceId, host or attribute:<name>, got {}.",
        describe_field(field)
    ))
}

fn describe_field(field: Option<&str>) -> String {
    match field {
        Some(field) => format!("{field:?}"),
        None => "no field".to_string(),
    }
}

/// Why an instance cannot take the next task; checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    Agent,
    Attribute,
    Cpu,
    Memory,
    Ports,
    MemberOf,
    DistinctInstance,
}

impl Rejection {
    fn reason(self) -> &'static str {
        match self {
            Self::Agent => reason::AGENT,
            Self::Attribute => reason::ATTRIBUTE,
            Self::Cpu => reason::CPU,
            Self::Memory => reason::MEMORY,
            Self::Ports => reason::PORTS,
            Self::MemberOf => reason::MEMBER_OF,
            Self::DistinctInstance => reason::DISTINCT_INSTANCE,
        }
    }
}

/// An instance's state as the plan progresses.
struct Slot<'a> {
    instance: &'a InstanceSnapshot,
    remaining_cpu: i64,
    remaining_memory: i64,
    /// Tasks of the request's group on the instance, including planned ones.
    group_tasks: usize,
    /// Tasks placed on the instance by this plan.
    planned_tasks: usize,
    /// `None` when the instance can take the next task.
    rejection: Option<Rejection>,
}

impl<'a> Slot<'a> {
    fn new(instance: &'a InstanceSnapshot, group: &str) -> Self {
        Self {
            instance,
            remaining_cpu: instance.remaining.cpu,
            remaining_memory: instance.remaining.memory,
            group_tasks: instance.task_groups.get(group).copied().unwrap_or(0),
            planned_tasks: 0,
            rejection: None,
        }
    }
}

/// Per-attribute-value task counts for a `spread` on `attribute:<name>`.
struct AttributeSpread {
    /// Bucket of each instance (same order as the slots); a missing attribute
    /// is the "" bucket.
    bucket_of_instance: Vec<usize>,
    /// Tasks of the request's group on all instances of each bucket.
    group_tasks: Vec<usize>,
}

impl AttributeSpread {
    fn new(attribute: &str, slots: &[Slot<'_>]) -> Self {
        let mut bucket_by_value: HashMap<&str, usize> = HashMap::new();
        let mut group_tasks = Vec::new();
        let bucket_of_instance = slots
            .iter()
            .map(|slot| {
                let value = slot
                    .instance
                    .attributes
                    .get(attribute)
                    .map_or("", String::as_str);
                let bucket = *bucket_by_value.entry(value).or_insert_with(|| {
                    group_tasks.push(0);
                    group_tasks.len() - 1
                });
                group_tasks[bucket] += slot.group_tasks;
                bucket
            })
            .collect();
        Self {
            bucket_of_instance,
            group_tasks,
        }
    }
}

/// The per-request part of the candidate checks.
struct Filter<'a> {
    request: &'a PlacementRequest,
    rules: &'a Rules,
    tcp_ports: Vec<u16>,
    udp_ports: Vec<u16>,
    /// The request binds the same host port twice, so no instance can take it.
    duplicate_ports: bool,
}

impl<'a> Filter<'a> {
    fn new(request: &'a PlacementRequest, rules: &'a Rules) -> Self {
        let static_ports = |protocol: Protocol| -> Vec<u16> {
            request
                .ports
                .iter()
                .filter(|port| port.protocol == protocol && port.host_port != 0)
                .map(|port: &PortRequest| port.host_port)
                .collect()
        };
        let tcp_ports = static_ports(Protocol::Tcp);
        let udp_ports = static_ports(Protocol::Udp);
        let has_duplicates = |ports: &[u16]| {
            let mut sorted = ports.to_vec();
            sorted.sort_unstable();
            sorted.windows(2).any(|pair| pair[0] == pair[1])
        };
        let duplicate_ports = has_duplicates(&tcp_ports) || has_duplicates(&udp_ports);
        Self {
            request,
            rules,
            tcp_ports,
            udp_ports,
            duplicate_ports,
        }
    }

    fn check(&self, slot: &Slot<'_>) -> Option<Rejection> {
        let instance = slot.instance;
        if !instance.agent_connected {
            return Some(Rejection::Agent);
        }
        let has_required_attributes =
            self.request
                .required_attributes
                .iter()
                .all(
                    |(name, value)| match (instance.attributes.get(name), value) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(actual), Some(expected)) => actual == expected,
                    },
                );
        if !has_required_attributes {
            return Some(Rejection::Attribute);
        }
        if self.request.cpu > slot.remaining_cpu {
            return Some(Rejection::Cpu);
        }
        if self.request.memory > slot.remaining_memory {
            return Some(Rejection::Memory);
        }
        if self.ports_conflict(slot) {
            return Some(Rejection::Ports);
        }
        let facts = InstanceFacts {
            snapshot: instance,
            planned_tasks: slot.planned_tasks,
            planned_group: &self.request.group,
        };
        if !self
            .rules
            .member_of
            .iter()
            .all(|expression| expression.matches_facts(&facts))
        {
            return Some(Rejection::MemberOf);
        }
        if self.rules.distinct_instance && slot.group_tasks > 0 {
            return Some(Rejection::DistinctInstance);
        }
        None
    }

    fn ports_conflict(&self, slot: &Slot<'_>) -> bool {
        let used = &slot.instance.remaining;
        let binds_static_ports = !self.tcp_ports.is_empty() || !self.udp_ports.is_empty();
        self.duplicate_ports
            // Every planned task of this request holds the same static ports.
            || (slot.planned_tasks > 0 && binds_static_ports)
            || self.tcp_ports.iter().any(|port| used.tcp_ports.contains(port))
            || self.udp_ports.iter().any(|port| used.udp_ports.contains(port))
    }
}

/// Returns the candidate with the smallest ranking key, breaking ties
/// uniformly at random; `None` when no instance is a candidate.
fn choose<R: Rng + ?Sized>(
    slots: &[Slot<'_>],
    spreads: &[AttributeSpread],
    ranking: &[RankKey],
    rng: &mut R,
    ties: &mut Vec<usize>,
) -> Option<usize> {
    ties.clear();
    let mut best = [0_i64; MAX_STRATEGIES];
    for (index, slot) in slots.iter().enumerate() {
        if slot.rejection.is_some() {
            continue;
        }
        let mut key = [0_i64; MAX_STRATEGIES];
        for (component, rank) in key.iter_mut().zip(ranking) {
            *component = match *rank {
                RankKey::LeastRemainingCpu => slot.remaining_cpu,
                RankKey::LeastRemainingMemory => slot.remaining_memory,
                RankKey::FewestGroupTasksOnInstance => count_key(slot.group_tasks),
                RankKey::FewestGroupTasksInAttributeValue(attribute) => {
                    let spread = &spreads[attribute];
                    count_key(spread.group_tasks[spread.bucket_of_instance[index]])
                }
            };
        }
        let ordering = if ties.is_empty() {
            Ordering::Less
        } else {
            key[..ranking.len()].cmp(&best[..ranking.len()])
        };
        match ordering {
            Ordering::Less => {
                best = key;
                ties.clear();
                ties.push(index);
            }
            Ordering::Equal => ties.push(index),
            Ordering::Greater => {}
        }
    }
    match ties.len() {
        0 => None,
        1 => Some(ties[0]),
        tied => Some(ties[rng.gen_range(0..tied)]),
    }
}

fn count_key(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::Resources;

    const GROUP: &str = "family:web";

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    fn instance(name: &str, cpu: i64, memory: i64) -> InstanceSnapshot {
        InstanceSnapshot {
            arn: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/default/{name}"),
            instance_id: format!("i-{name}"),
            attributes: BTreeMap::from([
                ("ecs.os-type".to_string(), "linux".to_string()),
                ("ecs.instance-type".to_string(), "t3.medium".to_string()),
            ]),
            remaining: Resources {
                cpu,
                memory,
                ..Resources::default()
            },
            agent_connected: true,
            agent_version: "1.80.0".to_string(),
            registered_at: 1_700_000_000.0,
            task_groups: BTreeMap::new(),
        }
    }

    fn with_attribute(mut instance: InstanceSnapshot, name: &str, value: &str) -> InstanceSnapshot {
        instance
            .attributes
            .insert(name.to_string(), value.to_string());
        instance
    }

    fn with_tasks(mut instance: InstanceSnapshot, group: &str, count: usize) -> InstanceSnapshot {
        if count > 0 {
            *instance.task_groups.entry(group.to_string()).or_default() += count;
        }
        instance
    }

    fn request(count: usize, cpu: i64, memory: i64) -> PlacementRequest {
        PlacementRequest {
            count,
            cpu,
            memory,
            group: GROUP.to_string(),
            task_definition_arn: "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"
                .to_string(),
            ..PlacementRequest::default()
        }
    }

    fn strategy(kind: &str, field: Option<&str>) -> PlacementStrategy {
        PlacementStrategy {
            kind: kind.to_string(),
            field: field.map(str::to_string),
        }
    }

    fn member_of(expression: &str) -> PlacementConstraint {
        PlacementConstraint {
            kind: "memberOf".to_string(),
            expression: Some(expression.to_string()),
        }
    }

    fn distinct_instance() -> PlacementConstraint {
        PlacementConstraint {
            kind: "distinctInstance".to_string(),
            expression: None,
        }
    }

    fn place_ok(instances: &[InstanceSnapshot], req: &PlacementRequest) -> Plan {
        place(instances, req, &mut rng()).expect("request is valid")
    }

    /// Short instance names (the ARN suffix) in placement order.
    fn placed_names(plan: &Plan) -> Vec<&str> {
        plan.placements
            .iter()
            .map(|placement| short_name(&placement.instance_arn))
            .collect()
    }

    fn short_name(arn: &str) -> &str {
        arn.rsplit('/').next().unwrap_or(arn)
    }

    fn counts(plan: &Plan) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for name in placed_names(plan) {
            *counts.entry(name).or_default() += 1;
        }
        counts
    }

    fn failure_reasons(plan: &Plan) -> Vec<(&str, &str)> {
        plan.failures
            .iter()
            .map(|failure| {
                (
                    failure.arn.as_deref().map_or("<none>", short_name),
                    failure.reason.as_str(),
                )
            })
            .collect()
    }

    fn invalid_strategy(strategies: Vec<PlacementStrategy>) -> String {
        match validate(&[], &strategies) {
            Err(PlacementError::InvalidStrategy(message)) => message,
            other => panic!("expected InvalidStrategy, got {other:?}"),
        }
    }

    fn invalid_constraint(constraints: Vec<PlacementConstraint>) -> String {
        match validate(&constraints, &[]) {
            Err(PlacementError::InvalidConstraint(message)) => message,
            other => panic!("expected InvalidConstraint, got {other:?}"),
        }
    }

    #[test]
    fn binpack_memory_fills_the_fullest_instance_first() {
        let instances = [instance("roomy", 4096, 2048), instance("tight", 4096, 1024)];
        let mut req = request(4, 128, 512);
        req.strategy = vec![strategy("binpack", Some("memory"))];
        let plan = place_ok(&instances, &req);
        assert_eq!(placed_names(&plan), ["tight", "tight", "roomy", "roomy"]);
        assert_eq!(plan.unplaced, 0);
        assert!(plan.failures.is_empty());
    }

    #[test]
    fn binpack_cpu_prefers_least_remaining_cpu() {
        let instances = [instance("a", 1024, 8192), instance("b", 512, 8192)];
        let mut req = request(3, 256, 128);
        req.strategy = vec![strategy("binpack", Some("cpu"))];
        let plan = place_ok(&instances, &req);
        assert_eq!(placed_names(&plan), ["b", "b", "a"]);
    }

    #[test]
    fn spread_instance_id_alternates() {
        let instances = [instance("a", 4096, 4096), instance("b", 4096, 4096)];
        for field in ["instanceId", "host"] {
            let mut req = request(4, 256, 256);
            req.strategy = vec![strategy("spread", Some(field))];
            let plan = place_ok(&instances, &req);
            assert_eq!(counts(&plan), BTreeMap::from([("a", 2), ("b", 2)]));
            let names = placed_names(&plan);
            assert!(names.windows(2).all(|pair| pair[0] != pair[1]), "{names:?}");
        }
    }

    #[test]
    fn spread_instance_id_counts_existing_tasks_of_the_group_only() {
        let instances = [
            with_tasks(instance("busy", 4096, 4096), GROUP, 2),
            with_tasks(instance("other", 4096, 4096), "service:unrelated", 5),
        ];
        let mut req = request(2, 256, 256);
        req.strategy = vec![strategy("spread", Some("instanceId"))];
        // "other" catches up with "busy" before "busy" gets another.
        assert_eq!(
            placed_names(&place_ok(&instances, &req)),
            ["other", "other"]
        );
    }

    #[test]
    fn spread_by_availability_zone_balances_zones() {
        const AZ: &str = "ecs.availability-zone";
        let instances = [
            with_attribute(instance("a1", 4096, 4096), AZ, "us-east-1a"),
            with_attribute(instance("a2", 4096, 4096), AZ, "us-east-1a"),
            with_attribute(instance("b1", 4096, 4096), AZ, "us-east-1b"),
        ];
        let mut req = request(4, 256, 256);
        req.strategy = vec![strategy("spread", Some("attribute:ecs.availability-zone"))];
        let plan = place_ok(&instances, &req);
        let counts = counts(&plan);
        let zone_a = counts.get("a1").unwrap_or(&0) + counts.get("a2").unwrap_or(&0);
        assert_eq!(zone_a, 2);
        assert_eq!(counts.get("b1"), Some(&2));
    }

    #[test]
    fn spread_by_zone_then_binpack_memory() {
        const AZ: &str = "ecs.availability-zone";
        let instances = [
            with_attribute(instance("a-roomy", 4096, 4096), AZ, "a"),
            with_attribute(instance("a-tight", 4096, 1024), AZ, "a"),
            with_attribute(instance("b-roomy", 4096, 4096), AZ, "b"),
        ];
        let mut req = request(4, 128, 256);
        req.strategy = vec![
            strategy("spread", Some("attribute:ecs.availability-zone")),
            strategy("binpack", Some("memory")),
        ];
        let plan = place_ok(&instances, &req);
        assert_eq!(
            counts(&plan),
            BTreeMap::from([("a-tight", 2), ("b-roomy", 2)])
        );
    }

    #[test]
    fn spread_by_attribute_counts_non_candidate_instances_and_missing_values() {
        const AZ: &str = "ecs.availability-zone";
        // Zone a already holds 3 tasks of the group on an instance that is full.
        let instances = [
            with_tasks(with_attribute(instance("a-full", 0, 0), AZ, "a"), GROUP, 3),
            with_attribute(instance("a-free", 4096, 4096), AZ, "a"),
            with_attribute(instance("b", 4096, 4096), AZ, "b"),
            instance("no-zone", 4096, 4096),
        ];
        let mut req = request(4, 128, 128);
        req.strategy = vec![strategy("spread", Some("attribute:ecs.availability-zone"))];
        let plan = place_ok(&instances, &req);
        assert_eq!(counts(&plan), BTreeMap::from([("b", 2), ("no-zone", 2)]));
    }

    #[test]
    fn random_places_everything_when_capacity_allows() {
        let instances: Vec<_> = (0..5)
            .map(|index| instance(&format!("i{index}"), 4096, 4096))
            .collect();
        let mut req = request(20, 128, 128);
        req.strategy = vec![strategy("random", None)];
        let plan = place_ok(&instances, &req);
        assert_eq!(plan.placements.len(), 20);
        assert_eq!(plan.unplaced, 0);
        assert!(
            counts(&plan).len() > 1,
            "random should use several instances"
        );
    }

    #[test]
    fn no_strategy_behaves_as_random_and_is_deterministic_per_seed() {
        let instances: Vec<_> = (0..5)
            .map(|index| instance(&format!("i{index}"), 4096, 4096))
            .collect();
        let req = request(10, 128, 128);
        let first = place_ok(&instances, &req);
        assert_eq!(first.placements.len(), 10);
        assert!(counts(&first).len() > 1);
        assert_eq!(first, place_ok(&instances, &req));
    }

    #[test]
    fn oversized_memory_fails_on_every_instance() {
        let instances = [instance("a", 4096, 2048), instance("b", 4096, 4096)];
        let plan = place_ok(&instances, &request(1, 128, 8192));
        assert!(plan.placements.is_empty());
        assert_eq!(plan.unplaced, 1);
        assert_eq!(
            failure_reasons(&plan),
            [("a", "RESOURCE:MEMORY"), ("b", "RESOURCE:MEMORY")]
        );
    }

    #[test]
    fn cpu_shortage_reports_resource_cpu() {
        let instances = [instance("a", 512, 4096)];
        let plan = place_ok(&instances, &request(3, 256, 128));
        assert_eq!(plan.placements.len(), 2);
        assert_eq!(plan.unplaced, 1);
        assert_eq!(failure_reasons(&plan), [("a", "RESOURCE:CPU")]);
    }

    #[test]
    fn used_host_port_reports_resource_ports() {
        let mut busy = instance("busy", 4096, 4096);
        busy.remaining.tcp_ports = BTreeSet::from([22, 80]);
        let mut req = request(1, 128, 128);
        req.ports = vec![PortRequest {
            host_port: 80,
            protocol: Protocol::Tcp,
        }];
        let plan = place_ok(&[busy.clone()], &req);
        assert_eq!(failure_reasons(&plan), [("busy", "RESOURCE:PORTS")]);

        // The same number over UDP is a different port.
        req.ports[0].protocol = Protocol::Udp;
        assert_eq!(place_ok(&[busy.clone()], &req).placements.len(), 1);

        // Dynamic host ports never conflict, even many times on one instance.
        busy.remaining.tcp_ports.insert(0);
        let mut req = request(3, 128, 128);
        req.ports = vec![
            PortRequest {
                host_port: 0,
                protocol: Protocol::Tcp,
            };
            2
        ];
        assert_eq!(place_ok(&[busy], &req).placements.len(), 3);
    }

    #[test]
    fn static_port_is_used_once_per_instance_within_a_plan() {
        let instances = [instance("a", 4096, 4096), instance("b", 4096, 4096)];
        let mut req = request(3, 128, 128);
        req.ports = vec![PortRequest {
            host_port: 8080,
            protocol: Protocol::Tcp,
        }];
        let plan = place_ok(&instances, &req);
        assert_eq!(counts(&plan), BTreeMap::from([("a", 1), ("b", 1)]));
        assert_eq!(plan.unplaced, 1);
        assert_eq!(
            failure_reasons(&plan),
            [("a", "RESOURCE:PORTS"), ("b", "RESOURCE:PORTS")]
        );
    }

    #[test]
    fn duplicate_ports_within_a_request_conflict() {
        let mut req = request(1, 128, 128);
        req.ports = vec![
            PortRequest {
                host_port: 53,
                protocol: Protocol::Udp,
            };
            2
        ];
        let plan = place_ok(&[instance("a", 4096, 4096)], &req);
        assert_eq!(failure_reasons(&plan), [("a", "RESOURCE:PORTS")]);
    }

    #[test]
    fn distinct_instance_places_one_task_per_instance() {
        let instances = [instance("a", 4096, 4096), instance("b", 4096, 4096)];
        let mut req = request(3, 128, 128);
        req.constraints = vec![distinct_instance()];
        let plan = place_ok(&instances, &req);
        assert_eq!(counts(&plan), BTreeMap::from([("a", 1), ("b", 1)]));
        assert_eq!(plan.unplaced, 1);
        assert_eq!(
            failure_reasons(&plan),
            [
                ("a", reason::DISTINCT_INSTANCE),
                ("b", reason::DISTINCT_INSTANCE)
            ]
        );
    }

    #[test]
    fn distinct_instance_sees_existing_tasks_of_the_group() {
        let instances = [
            with_tasks(instance("taken", 4096, 4096), GROUP, 1),
            with_tasks(instance("free", 4096, 4096), "family:other", 1),
        ];
        let mut req = request(1, 128, 128);
        req.constraints = vec![distinct_instance()];
        assert_eq!(placed_names(&place_ok(&instances, &req)), ["free"]);
    }

    #[test]
    fn member_of_filters_candidates() {
        let instances = [
            with_attribute(instance("t3-a", 4096, 4096), "zone", "a"),
            with_attribute(
                with_attribute(
                    instance("m5-b", 4096, 4096),
                    "ecs.instance-type",
                    "m5.large",
                ),
                "zone",
                "b",
            ),
            with_tasks(
                with_attribute(
                    instance("t2-c", 4096, 4096),
                    "ecs.instance-type",
                    "t2.small",
                ),
                "service:db",
                1,
            ),
        ];
        let cases: [(&str, &[&str]); 12] = [
            ("attribute:zone == a", &["t3-a"]),
            ("attribute:zone != a", &["m5-b", "t2-c"]),
            ("attribute:zone in [a, b]", &["m5-b", "t3-a"]),
            ("attribute:zone not_in [a, b]", &["t2-c"]),
            ("attribute:zone exists", &["m5-b", "t3-a"]),
            ("attribute:zone !exists", &["t2-c"]),
            ("attribute:ecs.instance-type == t2.*", &["t2-c"]),
            ("attribute:ecs.instance-type =~ '(t3|m5)\\..*'", &["m5-b", "t3-a"]),
            (
                "(attribute:zone == a or attribute:zone == b) and not attribute:ecs.instance-type == m5.*",
                &["t3-a"],
            ),
            ("attribute:zone == b || attribute:zone == a && attribute:x exists", &["m5-b"]),
            ("task:group == service:db", &["t2-c"]),
            ("task:group != service:db", &["m5-b", "t3-a"]),
        ];
        for (expression, expected) in cases {
            let mut req = request(3, 128, 128);
            req.constraints = vec![member_of(expression)];
            req.strategy = vec![strategy("spread", Some("instanceId"))];
            let plan = place_ok(&instances, &req);
            let placed: BTreeSet<&str> = placed_names(&plan).into_iter().collect();
            let expected: BTreeSet<&str> = expected.iter().copied().collect();
            assert_eq!(placed, expected, "{expression}");
            assert!(plan.failures.is_empty(), "{expression}");
        }
    }

    #[test]
    fn member_of_failure_reason_and_multiple_constraints() {
        let instances = [with_attribute(instance("a", 4096, 4096), "zone", "a")];
        let mut req = request(1, 128, 128);
        req.constraints = vec![
            member_of("attribute:zone exists"),
            member_of("attribute:zone == b"),
        ];
        let plan = place_ok(&instances, &req);
        assert_eq!(failure_reasons(&plan), [("a", reason::MEMBER_OF)]);
    }

    #[test]
    fn member_of_sees_tasks_placed_earlier_in_the_plan() {
        let instances = [instance("a", 4096, 4096), instance("b", 4096, 4096)];
        let mut req = request(4, 128, 128);
        // At most two tasks per instance, counting this plan's placements.
        req.constraints = vec![member_of("runningTasksCount < 2")];
        let plan = place_ok(&instances, &req);
        assert_eq!(counts(&plan), BTreeMap::from([("a", 2), ("b", 2)]));

        req.count = 5;
        let plan = place_ok(&instances, &req);
        assert_eq!(plan.unplaced, 1);
        assert_eq!(
            failure_reasons(&plan),
            [("a", reason::MEMBER_OF), ("b", reason::MEMBER_OF)]
        );
    }

    #[test]
    fn agent_and_attribute_failures_come_first() {
        let mut disconnected = instance("disconnected", 0, 0);
        disconnected.agent_connected = false;
        let plain = instance("plain", 0, 0);
        let wrong_value = with_attribute(instance("wrong-value", 0, 0), "com.example.gpu", "no");
        let poor = with_attribute(instance("poor", 0, 4096), "com.example.gpu", "yes");
        let mut req = request(1, 128, 128);
        req.required_attributes = vec![
            ("ecs.os-type".to_string(), None),
            ("com.example.gpu".to_string(), Some("yes".to_string())),
        ];
        let plan = place_ok(&[disconnected, plain, wrong_value, poor], &req);
        assert_eq!(plan.unplaced, 1);
        assert_eq!(
            failure_reasons(&plan),
            [
                ("disconnected", "AGENT"),
                ("plain", "ATTRIBUTE"),
                ("wrong-value", "ATTRIBUTE"),
                ("poor", "RESOURCE:CPU"),
            ]
        );
    }

    #[test]
    fn required_attributes_select_matching_instances() {
        let instances = [
            instance("plain", 4096, 4096),
            with_attribute(instance("gpu", 4096, 4096), "com.example.gpu", "yes"),
        ];
        let mut req = request(2, 128, 128);
        req.required_attributes = vec![("com.example.gpu".to_string(), Some("yes".to_string()))];
        assert_eq!(placed_names(&place_ok(&instances, &req)), ["gpu", "gpu"]);
    }

    #[test]
    fn no_instances_gives_a_single_failure() {
        let plan = place_ok(&[], &request(2, 128, 128));
        assert_eq!(plan.unplaced, 2);
        assert_eq!(
            plan.failures,
            [PlacementFailure {
                arn: None,
                reason: reason::NO_INSTANCES.to_string()
            }]
        );
    }

    #[test]
    fn zero_count_places_nothing() {
        let plan = place_ok(&[], &request(0, 128, 128));
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn invalid_strategies_are_rejected() {
        assert!(invalid_strategy(vec![strategy("binpack", None)]).contains("cpu or memory"));
        assert!(invalid_strategy(vec![strategy("binpack", Some("disk"))]).contains("\"disk\""));
        assert!(invalid_strategy(vec![strategy("spread", None)]).contains("instanceId"));
        assert!(invalid_strategy(vec![strategy("spread", Some("zone"))]).contains("\"zone\""));
        assert!(
            invalid_strategy(vec![strategy("spread", Some("attribute:"))]).contains("attribute:")
        );
        assert!(
            invalid_strategy(vec![strategy("pack", None)]).contains("Unknown placement strategy")
        );
        // Strategies after random are still validated.
        invalid_strategy(vec![strategy("random", None), strategy("binpack", None)]);
        let too_many = vec![strategy("random", None); MAX_STRATEGIES + 1];
        assert!(invalid_strategy(too_many).contains("At most 5"));
        let at_limit = vec![strategy("binpack", Some("memory")); MAX_STRATEGIES];
        assert_eq!(validate(&[], &at_limit), Ok(()));
    }

    #[test]
    fn invalid_constraints_are_rejected() {
        let message = invalid_constraint(vec![PlacementConstraint {
            kind: "memberOf".to_string(),
            expression: None,
        }]);
        assert!(message.contains("expression is required"), "{message}");
        let message = invalid_constraint(vec![PlacementConstraint {
            kind: "distinctInstance".to_string(),
            expression: Some("attribute:zone == a".to_string()),
        }]);
        assert!(message.contains("cannot be specified"), "{message}");
        let message = invalid_constraint(vec![PlacementConstraint {
            kind: "sameZone".to_string(),
            expression: None,
        }]);
        assert!(
            message.contains("Unknown placement constraint"),
            "{message}"
        );
        let message = invalid_constraint(vec![member_of("attribute:zone ==")]);
        assert!(message.contains("expected a value"), "{message}");
        let message = invalid_constraint(vec![distinct_instance(); MAX_CONSTRAINTS + 1]);
        assert!(message.contains("At most 10"), "{message}");

        // place() validates before looking at instances.
        let mut req = request(1, 128, 128);
        req.constraints = vec![member_of("attribute:zone = a")];
        assert!(matches!(
            place(&[], &req, &mut rng()),
            Err(PlacementError::InvalidConstraint(_))
        ));
    }

    #[test]
    fn error_display_is_the_message() {
        let error = PlacementError::InvalidStrategy("bad strategy".to_string());
        assert_eq!(error.to_string(), "bad strategy");
    }

    /// Over many random clusters and requests, no instance is ever given more
    /// than it has, static ports are never double-booked, and failures are
    /// reported exactly when tasks remain unplaced.
    #[test]
    fn reservations_never_exceed_capacity() {
        let mut rng = StdRng::seed_from_u64(2024);
        let strategies = [
            vec![],
            vec![strategy("binpack", Some("memory"))],
            vec![strategy("binpack", Some("cpu"))],
            vec![strategy("spread", Some("instanceId"))],
            vec![
                strategy("spread", Some("attribute:ecs.availability-zone")),
                strategy("binpack", Some("memory")),
            ],
        ];
        for round in 0..300 {
            let instances: Vec<InstanceSnapshot> = (0..rng.gen_range(1..12))
                .map(|index| {
                    let mut snapshot = with_attribute(
                        instance(
                            &format!("i{index}"),
                            rng.gen_range(0..4096),
                            rng.gen_range(0..8192),
                        ),
                        "ecs.availability-zone",
                        ["a", "b", "c"][rng.gen_range(0..3)],
                    );
                    snapshot.remaining.tcp_ports = (0..rng.gen_range(0..3))
                        .map(|_| rng.gen_range(79..83))
                        .collect();
                    snapshot.agent_connected = rng.gen_bool(0.9);
                    with_tasks(snapshot, GROUP, rng.gen_range(0..3))
                })
                .collect();
            let mut req = request(
                rng.gen_range(1..40),
                rng.gen_range(0..1024),
                rng.gen_range(1..2048),
            );
            req.strategy = strategies[round % strategies.len()].clone();
            if rng.gen_bool(0.3) {
                req.ports = vec![PortRequest {
                    host_port: rng.gen_range(79..83),
                    protocol: Protocol::Tcp,
                }];
            }
            if rng.gen_bool(0.2) {
                req.constraints = vec![distinct_instance()];
            }
            let plan = place(&instances, &req, &mut rng).expect("valid request");

            assert_eq!(plan.placements.len() + plan.unplaced, req.count);
            assert_eq!(plan.unplaced > 0, !plan.failures.is_empty());
            if plan.unplaced > 0 {
                assert_eq!(plan.failures.len(), instances.len());
            }
            for snapshot in &instances {
                let placed = plan
                    .placements
                    .iter()
                    .filter(|placement| placement.instance_arn == snapshot.arn)
                    .count() as i64;
                if placed == 0 {
                    continue;
                }
                assert!(snapshot.agent_connected);
                assert!(
                    placed * req.cpu <= snapshot.remaining.cpu,
                    "round {round}: cpu"
                );
                assert!(
                    placed * req.memory <= snapshot.remaining.memory,
                    "round {round}: memory"
                );
                for port in &req.ports {
                    assert!(!snapshot.remaining.tcp_ports.contains(&port.host_port));
                    assert_eq!(placed, 1, "round {round}: static port booked twice");
                }
                if !req.constraints.is_empty() {
                    assert!(
                        snapshot.task_groups.is_empty() && placed == 1,
                        "round {round}: distinct"
                    );
                }
            }
        }
    }
}

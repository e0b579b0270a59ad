//! Placement throughput on a large simulated cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use berth_scheduler::{
    place, InstanceSnapshot, PlacementRequest, PlacementStrategy, PortRequest, Protocol, Resources,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INSTANCES: usize = 10_000;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const GROUPS: [&str; 4] = [
    "service:web",
    "service:api",
    "family:batch",
    "service:cache",
];

/// A cluster with uneven free capacity and a few running tasks per instance,
/// so strategies have real work to do.
fn cluster() -> Vec<InstanceSnapshot> {
    let mut rng = StdRng::seed_from_u64(1);
    (0..INSTANCES)
        .map(|index| InstanceSnapshot {
            arn: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{index:05}"),
            instance_id: format!("i-{index:017x}"),
            attributes: BTreeMap::from([
                (
                    "ecs.availability-zone".to_string(),
                    ZONES[index % ZONES.len()].to_string(),
                ),
                ("ecs.instance-type".to_string(), "m5.xlarge".to_string()),
                ("ecs.os-type".to_string(), "linux".to_string()),
            ]),
            remaining: Resources {
                cpu: rng.gen_range(1024..4096),
                memory: rng.gen_range(4096..16384),
                tcp_ports: BTreeSet::from([22, 2375, 2376, 51678]),
                udp_ports: BTreeSet::new(),
            },
            agent_connected: true,
            agent_version: "1.80.0".to_string(),
            registered_at: 1_700_000_000.0,
            task_groups: (0..rng.gen_range(0..6)).fold(BTreeMap::new(), |mut groups, _| {
                *groups
                    .entry(GROUPS[rng.gen_range(0..GROUPS.len())].to_string())
                    .or_insert(0) += 1;
                groups
            }),
        })
        .collect()
}

fn strategy(kind: &str, field: &str) -> PlacementStrategy {
    PlacementStrategy {
        kind: kind.to_string(),
        field: Some(field.to_string()),
    }
}

fn bench_place(c: &mut Criterion) {
    let instances = cluster();
    let scenarios = [
        ("binpack-memory", vec![strategy("binpack", "memory")]),
        ("spread-instanceId", vec![strategy("spread", "instanceId")]),
        (
            "spread-az+binpack-memory",
            vec![
                strategy("spread", "attribute:ecs.availability-zone"),
                strategy("binpack", "memory"),
            ],
        ),
    ];
    let mut group = c.benchmark_group("place_10k_instances");
    for (name, strategies) in &scenarios {
        for count in [1, 10, 100] {
            let request = PlacementRequest {
                count,
                cpu: 256,
                memory: 512,
                ports: vec![PortRequest {
                    host_port: 0,
                    protocol: Protocol::Tcp,
                }],
                group: "service:web".to_string(),
                task_definition_arn: "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"
                    .to_string(),
                strategy: strategies.clone(),
                ..PlacementRequest::default()
            };
            group.bench_with_input(BenchmarkId::new(*name, count), &request, |b, request| {
                let mut rng = StdRng::seed_from_u64(7);
                b.iter(|| {
                    let plan = place(black_box(&instances), black_box(request), &mut rng)
                        .expect("valid request");
                    assert_eq!(plan.unplaced, 0);
                    plan
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_place);
criterion_main!(benches);

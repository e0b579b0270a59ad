//! Property tests of the request parsers: any numbers, any bytes — never a panic, and
//! nothing accepted outside ECS's bounds.

use berth_api::ecs::task_definitions::{parse_registration, MAX_CONTAINER_CPU};
use berth_wire::ecs;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn registration_numbers_are_bounded(
        cpu in any::<i32>(),
        memory in any::<i32>(),
        reservation in proptest::option::of(any::<i32>()),
        container_port in any::<i32>(),
        host_port in proptest::option::of(any::<i32>()),
        stop_timeout in proptest::option::of(any::<i32>()),
        task_cpu in proptest::option::of("[0-9]{1,12}|[0-9.]{1,6} ?vCPU|-?[0-9]{1,4}"),
        task_memory in proptest::option::of("[0-9]{1,12}|[0-9.]{1,6} ?GB|-?[0-9]{1,4}"),
    ) {
        let req: ecs::RegisterTaskDefinitionRequest = serde_json::from_value(serde_json::json!({
            "family": "f",
            "cpu": task_cpu,
            "memory": task_memory,
            "containerDefinitions": [{
                "name": "a", "image": "i", "cpu": cpu, "memory": memory,
                "memoryReservation": reservation, "stopTimeout": stop_timeout,
                "portMappings": [{"containerPort": container_port, "hostPort": host_port}],
            }],
        })).unwrap();
        if let Ok(parsed) = parse_registration(&req) {
            let c = &parsed.spec.containers[0];
            prop_assert!(c.cpu <= MAX_CONTAINER_CPU as u64);
            prop_assert!(c.memory.is_none_or(|m| m >= 6));
            prop_assert!(c.memory_reservation.is_none_or(|r| r >= 4 && c.memory.is_none_or(|m| r <= m)));
            prop_assert!(parsed.spec.cpu.is_none_or(|v| (128..=196_608).contains(&v)));
            prop_assert!(parsed.spec.memory.is_none_or(|v| v >= 6));
            let reservation = berth_control::launch::reservation(&parsed.spec, &Default::default()).unwrap();
            prop_assert!(reservation.memory < (1 << 40));
        }
    }

    #[test]
    fn any_body_is_an_error_or_a_request_never_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = berth_api::json::parse::<ecs::RunTaskRequest>(&body);
        let _ = berth_api::json::parse::<ecs::RegisterTaskDefinitionRequest>(&body);
    }

    #[test]
    fn json_shaped_bodies_are_parsed_or_refused(
        count in any::<i64>(),
        memory in any::<i64>(),
        name in "\\PC{0,20}",
    ) {
        let body = serde_json::json!({
            "taskDefinition": name, "count": count,
            "overrides": {"containerOverrides": [{"name": "main", "memory": memory}]},
        }).to_string();
        match berth_api::json::parse::<ecs::RunTaskRequest>(body.as_bytes()) {
            Ok(r) => {
                prop_assert!(i32::try_from(count).is_ok());
                prop_assert!(r.overrides.unwrap().container_overrides.unwrap()[0].memory.is_some());
            }
            Err(e) => prop_assert_eq!(e.kind, berth_core::ErrorKind::Serialization),
        }
    }
}

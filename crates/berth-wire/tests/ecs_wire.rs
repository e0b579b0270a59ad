//! The generated ECS shapes against realistic JSON 1.1 payloads.

use berth_wire::ecs::{self, NetworkBinding, RegisterTaskDefinitionRequest, Task};
use serde_json::{json, Value};

/// What `aws ecs register-task-definition --cli-input-json` sends for a
/// two-container web service.
fn register_task_definition_request() -> Value {
    json!({
        "family": "web",
        "taskRoleArn": "arn:aws:iam::123456789012:role/web-task",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "cpu": "512",
        "memory": "1024",
        "containerDefinitions": [
            {
                "name": "app",
                "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web:1.4.2",
                "cpu": 256,
                "memory": 512,
                "memoryReservation": 256,
                "essential": true,
                "command": ["serve", "--port", "8080"],
                "environment": [
                    {"name": "RUST_LOG", "value": "info"},
                    {"name": "PORT", "value": "8080"}
                ],
                "secrets": [
                    {
                        "name": "DATABASE_URL",
                        "valueFrom": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-url-AbCdEf"
                    },
                    {"name": "API_KEY", "valueFrom": "arn:aws:ssm:eu-west-1:123456789012:parameter/web/api-key"}
                ],
                "portMappings": [
                    {"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "http", "appProtocol": "http"},
                    {"containerPortRange": "9000-9010", "protocol": "udp"}
                ],
                "healthCheck": {
                    "command": ["CMD-SHELL", "curl -f http://localhost:8080/health || exit 1"],
                    "interval": 30,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 10
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": "/ecs/web",
                        "awslogs-region": "eu-west-1",
                        "awslogs-stream-prefix": "app"
                    },
                    "secretOptions": [
                        {"name": "splunk-token", "valueFrom": "arn:aws:ssm:eu-west-1:123456789012:parameter/splunk"}
                    ]
                },
                "mountPoints": [
                    {"sourceVolume": "data", "containerPath": "/var/lib/web", "readOnly": false},
                    {"sourceVolume": "config", "containerPath": "/etc/web", "readOnly": true}
                ],
                "volumesFrom": [{"sourceContainer": "init", "readOnly": true}],
                "linuxParameters": {
                    "capabilities": {"add": ["SYS_PTRACE"], "drop": ["NET_RAW"]},
                    "initProcessEnabled": true,
                    "sharedMemorySize": 64,
                    "tmpfs": [{"containerPath": "/tmp", "size": 128, "mountOptions": ["noexec"]}],
                    "devices": [{"hostPath": "/dev/fuse", "permissions": ["read", "write"]}]
                },
                "dependsOn": [
                    {"containerName": "init", "condition": "SUCCESS"},
                    {"containerName": "sidecar", "condition": "HEALTHY"}
                ],
                "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
                "dockerLabels": {"com.example.team": "web"},
                "stopTimeout": 30,
                "readonlyRootFilesystem": false
            },
            {
                "name": "init",
                "image": "busybox:1.36",
                "essential": false,
                "entryPoint": ["sh", "-c"],
                "command": ["cp -r /seed/. /var/lib/web"]
            },
            {
                "name": "sidecar",
                "image": "envoyproxy/envoy:v1.29",
                "essential": true,
                "memory": 128,
                "user": "1337"
            }
        ],
        "volumes": [
            {"name": "data", "host": {"sourcePath": "/srv/web"}},
            {"name": "config", "dockerVolumeConfiguration": {
                "scope": "shared", "autoprovision": true, "driver": "local",
                "driverOpts": {"type": "tmpfs"}, "labels": {"app": "web"}
            }}
        ],
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.os-type == linux"}],
        "pidMode": "task",
        "tags": [{"key": "team", "value": "web"}]
    })
}

#[test]
fn register_task_definition_round_trips_exactly() {
    let input = register_task_definition_request();
    let req: RegisterTaskDefinitionRequest =
        serde_json::from_value(input.clone()).expect("deserialize");

    // A few members reached through the typed structs.
    assert_eq!(req.family.as_deref(), Some("web"));
    let app = &req.container_definitions.as_ref().unwrap()[0];
    assert_eq!(app.memory, Some(512));
    assert_eq!(app.health_check.as_ref().unwrap().start_period, Some(10));
    assert_eq!(
        app.log_configuration
            .as_ref()
            .unwrap()
            .options
            .as_ref()
            .unwrap()["awslogs-group"],
        "/ecs/web"
    );
    assert_eq!(
        app.depends_on.as_ref().unwrap()[1].condition.as_deref(),
        Some("HEALTHY")
    );
    let linux = app.linux_parameters.as_ref().unwrap();
    assert_eq!(linux.init_process_enabled, Some(true));
    assert_eq!(
        req.placement_constraints.as_ref().unwrap()[0]
            .r#type
            .as_deref(),
        Some("memberOf")
    );

    let back = serde_json::to_value(&req).expect("serialize");
    assert_eq!(back, input);
    // And through text, as the server does.
    let text = serde_json::to_string(&req).unwrap();
    let again: RegisterTaskDefinitionRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(again, req);
}

#[test]
fn absent_members_are_not_serialized() {
    let req = RegisterTaskDefinitionRequest {
        family: Some("web".into()),
        container_definitions: Some(vec![ecs::ContainerDefinition {
            name: Some("app".into()),
            image: Some("nginx".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "nginx"}]})
    );
    assert_eq!(
        serde_json::to_string(&RegisterTaskDefinitionRequest::default()).unwrap(),
        "{}"
    );
}

#[test]
fn missing_required_members_and_unknown_members_deserialize() {
    // `family` and `containerDefinitions` are required by the model; the API layer,
    // not serde, reports them. Unknown members are ignored.
    let req: RegisterTaskDefinitionRequest =
        serde_json::from_value(json!({"someFutureMember": {"x": 1}})).unwrap();
    assert_eq!(req, RegisterTaskDefinitionRequest::default());
}

#[test]
fn task_network_binding_uses_bind_ip_wire_name() {
    let task: Task = serde_json::from_value(json!({
        "taskArn": "arn:aws:ecs:eu-west-1:123456789012:task/default/0123456789abcdef",
        "lastStatus": "RUNNING",
        "createdAt": 1718000000.123,
        "containers": [{
            "name": "app",
            "networkBindings": [
                {"bindIP": "0.0.0.0", "containerPort": 8080, "hostPort": 32768, "protocol": "tcp"}
            ]
        }]
    }))
    .unwrap();
    let binding = &task.containers.as_ref().unwrap()[0]
        .network_bindings
        .as_ref()
        .unwrap()[0];
    assert_eq!(binding.bind_ip.as_deref(), Some("0.0.0.0"));
    assert_eq!(binding.host_port, Some(32768));
    assert_eq!(task.created_at, Some(1718000000.123));

    let out = serde_json::to_value(NetworkBinding {
        bind_ip: Some("127.0.0.1".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(out, json!({"bindIP": "127.0.0.1"}));
    assert!(NetworkBinding::MEMBERS.contains(&"bindIP"));
}

#[test]
fn wrong_member_types_are_rejected() {
    let err = serde_json::from_value::<RegisterTaskDefinitionRequest>(json!({
        "family": "web",
        "containerDefinitions": [{"name": "app", "memory": "512"}]
    }))
    .unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");

    assert!(serde_json::from_value::<RegisterTaskDefinitionRequest>(json!({"family": 7})).is_err());
    assert!(serde_json::from_value::<RegisterTaskDefinitionRequest>(
        json!({"containerDefinitions": {"name": "app"}})
    )
    .is_err());
}

#[test]
fn integer_members_reject_values_beyond_i32() {
    let err =
        serde_json::from_str::<ecs::ContainerDefinition>(r#"{"memory": 2147483648}"#).unwrap_err();
    assert!(err.to_string().contains("invalid value"), "{err}");
    let ok: ecs::ContainerDefinition = serde_json::from_str(r#"{"memory": 2147483647}"#).unwrap();
    assert_eq!(ok.memory, Some(i32::MAX));
    assert!(serde_json::from_str::<ecs::ContainerDefinition>(r#"{"memory": 1.5}"#).is_err());
}

#[test]
fn operations_match_the_model() {
    assert_eq!(ecs::OPERATIONS.len(), 77);
    let names: Vec<&str> = ecs::OPERATIONS.iter().map(|op| op.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "OPERATIONS sorted by name");

    let run = berth_wire::find_operation(ecs::OPERATIONS, "RunTask").expect("RunTask");
    assert_eq!(run.input, Some("RunTaskRequest"));
    assert_eq!(run.output, Some("RunTaskResponse"));
    assert!(run.errors.contains(&"ClusterNotFoundException"));
    assert!(berth_wire::find_operation(ecs::OPERATIONS, "NoSuchOperation").is_none());
}

#[test]
fn service_metadata_errors_and_enums() {
    assert_eq!(ecs::TARGET_PREFIX, "AmazonEC2ContainerServiceV20141113");
    assert_eq!(ecs::SIGNING_NAME, "ecs");
    assert_eq!(ecs::API_VERSION, "2014-11-13");
    assert_eq!(ecs::JSON_VERSION, "1.1");

    assert_eq!(
        berth_wire::error_status(ecs::ERRORS, "ClusterNotFoundException"),
        Some(400)
    );
    assert_eq!(
        berth_wire::error_status(ecs::ERRORS, "ServerException"),
        Some(500)
    );
    // Every error an operation names is an error shape with a struct.
    for op in ecs::OPERATIONS {
        for e in op.errors {
            assert!(
                berth_wire::error_status(ecs::ERRORS, e).is_some(),
                "{}: {e}",
                op.name
            );
        }
    }

    assert!(ecs::enums::LAUNCH_TYPE.contains(&"FARGATE"));
    assert!(ecs::enums::DESIRED_STATUS.contains(&"STOPPED"));
    assert!(ecs::enums::CONTAINER_CONDITION.contains(&"HEALTHY"));
}

#[test]
fn structure_index_covers_every_operation_shape() {
    let names: Vec<&str> = ecs::STRUCTURES.iter().map(|(n, _)| *n).collect();
    for op in ecs::OPERATIONS {
        for shape in op.input.iter().chain(op.output.iter()) {
            assert!(names.binary_search(shape).is_ok(), "{shape}");
        }
    }
    let (_, members) = ecs::STRUCTURES[names.binary_search(&"NetworkBinding").unwrap()];
    assert_eq!(members, NetworkBinding::MEMBERS);
}

#[test]
fn document_members_are_json_values() {
    // ServiceDeployment lifecycle hooks carry `hookDetails`, a document.
    let hook: ecs::DeploymentLifecycleHook = serde_json::from_value(json!({
        "hookTargetArn": "arn:aws:lambda:eu-west-1:123456789012:function:hook",
        "hookDetails": {"anything": [1, "two", {"three": null}]}
    }))
    .unwrap();
    assert_eq!(
        hook.hook_details,
        Some(json!({"anything": [1, "two", {"three": null}]}))
    );
}

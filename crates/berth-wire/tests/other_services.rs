//! The non-default services (run with `--features all-services`).
#![allow(unused_imports)]

use serde_json::json;

#[cfg(feature = "logs")]
#[test]
fn logs_metadata_and_recursive_shape() {
    use berth_wire::logs;
    assert_eq!(logs::TARGET_PREFIX, "Logs_20140328");
    // The model has no signingName: botocore falls back to endpointPrefix.
    assert_eq!(logs::SIGNING_NAME, "logs");
    assert!(berth_wire::find_operation(logs::OPERATIONS, "PutLogEvents").is_some());
    // LogFieldType contains itself (element), through a Box.
    let t: logs::LogFieldType = serde_json::from_value(json!({
        "type": "array", "element": {"type": "array", "element": {"type": "string"}}
    }))
    .unwrap();
    let inner = t.element.as_ref().unwrap().element.as_ref().unwrap();
    assert_eq!(inner.r#type.as_deref(), Some("string"));
    let ev: logs::InputLogEvent =
        serde_json::from_value(json!({"timestamp": 1718000000123_i64, "message": "hi"})).unwrap();
    assert_eq!(ev.timestamp, Some(1718000000123));
}

#[cfg(feature = "ecr")]
#[test]
fn ecr_signing_name_differs_from_endpoint_prefix() {
    use berth_wire::ecr;
    assert_eq!(ecr::SIGNING_NAME, "ecr");
    assert_eq!(ecr::ENDPOINT_PREFIX, "api.ecr");
    assert_eq!(ecr::TARGET_PREFIX, "AmazonEC2ContainerRegistry_V20150921");
}

#[cfg(feature = "application-autoscaling")]
#[test]
fn application_autoscaling_uses_pascal_case_members() {
    use berth_wire::application_autoscaling as aas;
    assert_eq!(aas::TARGET_PREFIX, "AnyScaleFrontendService");
    let req: aas::RegisterScalableTargetRequest = serde_json::from_value(json!({
        "ServiceNamespace": "ecs",
        "ResourceId": "service/default/web",
        "ScalableDimension": "ecs:service:DesiredCount",
        "MinCapacity": 1,
        "MaxCapacity": 10
    }))
    .unwrap();
    assert_eq!(req.max_capacity, Some(10));
    assert!(aas::enums::SCALABLE_DIMENSION.contains(&"ecs:service:DesiredCount"));
}

#[cfg(feature = "secretsmanager")]
#[test]
fn secretsmanager_blob_is_base64_text() {
    use berth_wire::secretsmanager as sm;
    let out: sm::GetSecretValueResponse = serde_json::from_value(json!({
        "ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        "SecretBinary": "aGVsbG8=",
        "CreatedDate": 1718000000.5
    }))
    .unwrap();
    assert_eq!(out.secret_binary.as_deref(), Some("aGVsbG8="));
    assert_eq!(out.created_date, Some(1718000000.5));
}

#[cfg(feature = "ssm")]
#[test]
fn ssm_parameter_type_member_is_raw_identifier() {
    use berth_wire::ssm;
    assert_eq!(ssm::TARGET_PREFIX, "AmazonSSM");
    assert_eq!(ssm::SIGNING_NAME, "ssm");
    let p: ssm::Parameter = serde_json::from_value(json!({
        "Name": "/web/api-key", "Type": "SecureString", "Value": "x", "Version": 3
    }))
    .unwrap();
    assert_eq!(p.r#type.as_deref(), Some("SecureString"));
    assert_eq!(p.version, Some(3));
}

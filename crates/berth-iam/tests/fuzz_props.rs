//! The fuzz harnesses (`berth_iam::fuzzing`, also run by the cargo-fuzz targets in `fuzz/`
//! on nightly) driven by proptest, so CI on stable runs them too: arbitrary bytes, and
//! inputs built from the parsers' own vocabulary so that the deeper paths are reached.

use berth_iam::fuzzing;
use proptest::prelude::*;
use serde_json::Value;

/// Pieces of a SigV4 request, glued together in any order and amount.
fn sigv4_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization: AWS4-HMAC-SHA256 ".to_string()),
        Just("Credential=AKIDEXAMPLE/20260101/us-east-1/ecs/aws4_request".to_string()),
        Just("Credential=AKID/2026010/us-east-1/ecs/aws4_request".to_string()),
        Just(", ".to_string()),
        Just("SignedHeaders=host;x-amz-date".to_string()),
        Just("SignedHeaders=content-type;host;x-amz-date;x-amz-target".to_string()),
        Just("Signature=".to_string()),
        "[0-9a-f]{64}",
        Just("\nx-amz-date: 20260101T000000Z".to_string()),
        Just("\nx-amz-date: 20261125T200000Z".to_string()),
        Just("\nhost: 127.0.0.1:8080".to_string()),
        Just("\nx-amz-security-token: FQoG".to_string()),
        Just("\nx-amz-content-sha256: UNSIGNED-PAYLOAD".to_string()),
        Just("\ncontent-type: application/x-amz-json-1.1".to_string()),
        Just("X-Amz-Algorithm=AWS4-HMAC-SHA256&".to_string()),
        Just("X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fsts%2Faws4_request&".to_string()),
        Just("X-Amz-Date=20260101T000000Z&".to_string()),
        Just("X-Amz-Expires=".to_string()),
        Just("X-Amz-SignedHeaders=host&".to_string()),
        Just("X-Amz-Signature=".to_string()),
        "[0-9]{1,12}",
        "[ -~]{0,12}",
        Just("\n\n".to_string()),
        Just("\n".to_string()),
    ]
}

fn iam_json() -> impl Strategy<Value = Value> {
    let word = prop_oneof![
        Just("Version"),
        Just("2012-10-17"),
        Just("Statement"),
        Just("Sid"),
        Just("Effect"),
        Just("Allow"),
        Just("Deny"),
        Just("Action"),
        Just("NotAction"),
        Just("Resource"),
        Just("NotResource"),
        Just("Principal"),
        Just("NotPrincipal"),
        Just("Service"),
        Just("AWS"),
        Just("Condition"),
        Just("StringEqualsIgnoreCase"),
        Just("StringNotLikeIfExists"),
        Just("ForAllValues:StringLike"),
        Just("ForAnyValue:ArnEquals"),
        Just("NumericGreaterThanEquals"),
        Just("DateLessThan"),
        Just("IpAddress"),
        Just("NotIpAddress"),
        Just("Bool"),
        Just("Null"),
        Just("aws:SourceIp"),
        Just("aws:CurrentTime"),
        Just("aws:TagKeys"),
        Just("ecs:cluster"),
        Just("*"),
        Just("ecs:*"),
        Just("arn:aws:ecs:*:*:cluster/${aws:username}"),
        Just("${*}${?}${$}${aws:username"),
        Just("10.0.0.0/8"),
        Just("::1/129"),
        Just("2026-01-01T00:00:00Z"),
        Just("1e400"),
        Just("true"),
    ]
    .prop_map(str::to_string);
    let leaf = prop_oneof![
        word.clone().prop_map(Value::String),
        "[ -~]{0,10}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((word.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn sigv4_survives_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::sigv4(&data);
    }

    #[test]
    fn sigv4_survives_near_misses(pieces in proptest::collection::vec(sigv4_piece(), 0..24)) {
        fuzzing::sigv4(pieces.concat().as_bytes());
    }

    #[test]
    fn policy_survives_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::policy(&data);
    }

    #[test]
    fn policy_survives_arbitrary_documents(doc in iam_json()) {
        fuzzing::policy(doc.to_string().as_bytes());
        // And wrapped as a statement, so the statement parser sees it.
        let wrapped = serde_json::json!({"Version": "2012-10-17", "Statement": doc});
        fuzzing::policy(wrapped.to_string().as_bytes());
    }
}

/// A real signed request goes all the way through the harness (so the proptests above
/// do reach verification).
#[test]
fn a_real_request_reaches_verification() {
    use berth_iam::sigv4::{sign_request, ClientCredentials, SigningTarget};
    let creds = ClientCredentials::new("AKIDEXAMPLE", "another-secret");
    let own = [("host", "127.0.0.1:8080"), ("x-amz-target", "X.Y")];
    let added = sign_request(
        "POST",
        "http://127.0.0.1:8080/",
        &own,
        b"{}",
        &creds,
        &SigningTarget {
            region: "us-east-1",
            service: "ecs",
            time: std::time::SystemTime::now(),
        },
    )
    .unwrap();
    let mut text = String::from("\n");
    for (k, v) in own
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(added)
    {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text.push_str("\n{}");
    let (_, headers, body) = fuzzing::request_parts(text.as_bytes());
    let req = berth_iam::sigv4::RequestView {
        method: "POST",
        path: "/",
        query: None,
        headers: &headers,
        body,
    };
    let signed = berth_iam::sigv4::parse(&req).unwrap().unwrap();
    assert!(berth_iam::sigv4::verify(&req, &signed, "another-secret").is_ok());
    fuzzing::sigv4(text.as_bytes());
}

//! SigV4 verification: AWS's published test vector, round trips through the AWS SDK's
//! signer, tampering, clocks, presigned URLs, and property tests of the parser.

use std::time::{Duration, UNIX_EPOCH};

use berth_iam::sigv4::{
    self, check_time, parse, parse_authorization, presign_url, sign_request, verify,
    ClientCredentials, RequestView, SigErrorKind, SignatureForm, SigningTarget,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn view<'a>(
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    h: &'a HeaderMap,
    body: &'a [u8],
) -> RequestView<'a> {
    RequestView {
        method,
        path,
        query,
        headers: h,
        body,
    }
}

/// `get-vanilla` from AWS's Signature Version 4 test suite.
#[test]
fn aws_test_suite_get_vanilla() {
    let h = headers(&[
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    ]);
    let req = view("GET", "/", None, &h, b"");
    let signed = parse(&req).unwrap().unwrap();
    assert_eq!(signed.scope.access_key_id, "AKIDEXAMPLE");
    assert_eq!(signed.scope.service, "service");
    assert_eq!(signed.form, SignatureForm::Header);
    verify(&req, &signed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap();
    let e = verify(&req, &signed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ").unwrap_err();
    assert_eq!(e.kind, SigErrorKind::Invalid);
    assert!(e
        .message
        .starts_with("The request signature we calculated does not match"));
}

const T0: u64 = 1_700_000_000;

fn signed_post(creds: &ClientCredentials, body: &[u8], extra: &[(&str, &str)]) -> HeaderMap {
    let mut own = vec![
        ("host", "127.0.0.1:8080"),
        ("content-type", "application/x-amz-json-1.1"),
        (
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        ),
    ];
    own.extend_from_slice(extra);
    let added = sign_request(
        "POST",
        "http://127.0.0.1:8080/",
        &own,
        body,
        creds,
        &SigningTarget {
            region: "us-east-1",
            service: "ecs",
            time: UNIX_EPOCH + Duration::from_secs(T0),
        },
    )
    .unwrap();
    let mut map = headers(&own);
    for (k, v) in added {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    map
}

#[test]
fn sdk_signed_requests_verify_and_tampering_does_not() {
    let creds = ClientCredentials::new("AKIAEXAMPLE", "secret/with+chars");
    let body = br#"{"maxResults":10}"#;
    let h = signed_post(&creds, body, &[("user-agent", "aws-cli/1.0")]);
    let req = view("POST", "/", None, &h, body);
    let signed = parse(&req).unwrap().unwrap();
    verify(&req, &signed, "secret/with+chars").unwrap();
    check_time(&signed, T0 as i64).unwrap();

    // Another body, another signed header value: refused.
    assert!(verify(
        &view("POST", "/", None, &h, br#"{"maxResults":11}"#),
        &signed,
        "secret/with+chars"
    )
    .is_err());
    let mut other = h.clone();
    other.insert(
        "x-amz-target",
        HeaderValue::from_static("AmazonEC2ContainerServiceV20141113.DeleteCluster"),
    );
    assert!(verify(
        &view("POST", "/", None, &other, body),
        &signed,
        "secret/with+chars"
    )
    .is_err());
    // An unsigned header may change (proxies rewrite user agents).
    let mut ua = h.clone();
    ua.insert("user-agent", HeaderValue::from_static("something else"));
    verify(
        &view("POST", "/", None, &ua, body),
        &signed,
        "secret/with+chars",
    )
    .unwrap();
    // A query string added to a header-signed request is part of what was signed.
    assert!(verify(
        &view("POST", "/", Some("a=b"), &h, body),
        &signed,
        "secret/with+chars"
    )
    .is_err());
}

#[test]
fn session_tokens_are_signed() {
    let creds = ClientCredentials::new("ASIAEXAMPLE", "s").with_session_token("tok/en+=");
    let h = signed_post(&creds, b"{}", &[]);
    let req = view("POST", "/", None, &h, b"{}");
    let signed = parse(&req).unwrap().unwrap();
    assert_eq!(signed.session_token.as_deref(), Some("tok/en+="));
    assert!(signed
        .signed_headers
        .iter()
        .any(|h| h == "x-amz-security-token"));
    verify(&req, &signed, "s").unwrap();
    let mut swapped = h.clone();
    swapped.insert("x-amz-security-token", HeaderValue::from_static("other"));
    let req = view("POST", "/", None, &swapped, b"{}");
    let signed = parse(&req).unwrap().unwrap();
    assert!(verify(&req, &signed, "s").is_err());
}

#[test]
fn clock_skew_and_scope_dates() {
    let creds = ClientCredentials::new("AKIAEXAMPLE", "s");
    let h = signed_post(&creds, b"{}", &[]);
    let signed = parse(&view("POST", "/", None, &h, b"{}")).unwrap().unwrap();
    check_time(&signed, T0 as i64 + 14 * 60).unwrap();
    check_time(&signed, T0 as i64 - 14 * 60).unwrap();
    let late = check_time(&signed, T0 as i64 + 16 * 60).unwrap_err();
    assert!(
        late.message
            .starts_with("Signature expired: 20231114T221320Z is now earlier than"),
        "{}",
        late.message
    );
    let early = check_time(&signed, T0 as i64 - 16 * 60).unwrap_err();
    assert!(
        early.message.starts_with("Signature not yet current"),
        "{}",
        early.message
    );
    let mut wrong_scope = signed.clone();
    wrong_scope.scope.date = "20231113".into();
    assert!(check_time(&wrong_scope, T0 as i64)
        .unwrap_err()
        .message
        .contains("Credential scope"));
}

#[test]
fn signed_payload_hash_header() {
    let creds = ClientCredentials::new("AKIAEXAMPLE", "s");
    let body = b"Action=GetCallerIdentity&Version=2011-06-15";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
    let h = signed_post(&creds, body, &[("x-amz-content-sha256", &hash)]);
    let req = view("POST", "/", None, &h, body);
    let signed = parse(&req).unwrap().unwrap();
    verify(&req, &signed, "s").unwrap();
    // UNSIGNED-PAYLOAD is refused in the header form (plain HTTP).
    let h = signed_post(
        &creds,
        body,
        &[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
    );
    let req = view("POST", "/", None, &h, body);
    let signed = parse(&req).unwrap().unwrap();
    assert!(verify(&req, &signed, "s")
        .unwrap_err()
        .message
        .contains("UNSIGNED-PAYLOAD"));
}

#[test]
fn presigned_urls() {
    let creds = ClientCredentials::new("AKIAEXAMPLE", "s").with_session_token("tok");
    let url = presign_url(
        "GET",
        "http://127.0.0.1:8080/?Action=GetCallerIdentity&Version=2011-06-15",
        &creds,
        &SigningTarget {
            region: "us-east-1",
            service: "sts",
            time: UNIX_EPOCH + Duration::from_secs(T0),
        },
        Duration::from_secs(300),
    )
    .unwrap();
    let query = url.split_once('?').unwrap().1.to_string();
    let h = headers(&[("host", "127.0.0.1:8080")]);
    let req = view("GET", "/", Some(&query), &h, b"");
    let signed = parse(&req).unwrap().unwrap();
    assert_eq!(signed.form, SignatureForm::Presigned { expires: 300 });
    assert_eq!(signed.session_token.as_deref(), Some("tok"));
    verify(&req, &signed, "s").unwrap();
    check_time(&signed, T0 as i64 + 299).unwrap();
    assert!(check_time(&signed, T0 as i64 + 301)
        .unwrap_err()
        .message
        .starts_with("Signature expired"));
    // Another action in the same URL: refused.
    let tampered = query.replace("GetCallerIdentity", "AssumeRole");
    let req = view("GET", "/", Some(&tampered), &h, b"");
    let signed = parse(&req).unwrap().unwrap();
    assert!(verify(&req, &signed, "s").is_err());
    // Both forms at once: refused as incomplete.
    let both = headers(&[("host", "h"), ("authorization", "AWS4-HMAC-SHA256 Credential=a/20200101/r/s/aws4_request, SignedHeaders=host, Signature=00")]);
    assert_eq!(
        parse(&view("GET", "/", Some(&query), &both, b""))
            .unwrap_err()
            .kind,
        SigErrorKind::Incomplete
    );
}

#[test]
fn garbled_authorization_headers_are_incomplete() {
    for value in [
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKIA/20200101/us-east-1/ecs/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIA/20200101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=AKIA/2020/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 Credential=AKIA/20200101/us-east-1/ecs/aws5_request, SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000",
        "AWS4-HMAC-SHA256 Credential=AKIA/20200101/us-east-1/ecs/aws4_request, SignedHeaders=Host, Signature=0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let e = parse_authorization(value).unwrap_err();
        assert_eq!(e.kind, SigErrorKind::Incomplete, "{value}");
    }
    // No X-Amz-Date.
    let h = headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20200101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000")]);
    assert_eq!(
        parse(&view("POST", "/", None, &h, b"")).unwrap_err().kind,
        SigErrorKind::Incomplete
    );
    // Nothing at all: not signed.
    assert!(parse(&view("POST", "/", None, &HeaderMap::new(), b""))
        .unwrap()
        .is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The parser never panics, whatever the header or query.
    #[test]
    fn parser_survives_anything(auth in ".{0,300}", query in ".{0,300}", date in "[0-9TZ]{0,20}") {
        let _ = parse_authorization(&auth);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&auth) {
            h.insert("authorization", v);
        }
        if let Ok(v) = HeaderValue::from_str(&date) {
            h.insert("x-amz-date", v);
        }
        let _ = parse(&view("POST", "/", None, &h, b""));
        let _ = parse(&view("GET", "/", Some(&query), &HeaderMap::new(), b""));
        let _ = sigv4::parse_amz_date(&date);
    }

    /// Structured near-misses of a real header never panic and never verify.
    #[test]
    fn mangled_real_headers(cut in 0usize..400, insert in "[ ,=/;a-zA-Z0-9]{0,8}") {
        let creds = ClientCredentials::new("AKIAEXAMPLE", "s");
        let h = signed_post(&creds, b"{}", &[]);
        let auth = h.get("authorization").unwrap().to_str().unwrap().to_string();
        let cut = cut.min(auth.len());
        let mangled = format!("{}{}{}", &auth[..cut], insert, &auth[cut..]);
        let original = parse(&view("POST", "/", None, &h, b"{}")).unwrap().unwrap();
        let mut h2 = h.clone();
        if let Ok(v) = HeaderValue::from_str(&mangled) {
            h2.insert("authorization", v);
            let req = view("POST", "/", None, &h2, b"{}");
            if let Ok(Some(signed)) = parse(&req) {
                // Only a header that says the same thing can verify (the access key id
                // is not covered by the signature: it selects the secret).
                if verify(&req, &signed, "s").is_ok() {
                    prop_assert_eq!(&signed.signature, &original.signature);
                    prop_assert_eq!(&signed.signed_headers, &original.signed_headers);
                    prop_assert_eq!(&signed.scope.date, &original.scope.date);
                    prop_assert_eq!(&signed.scope.region, &original.scope.region);
                    prop_assert_eq!(&signed.scope.service, &original.scope.service);
                }
            }
        }
    }

    /// Whatever is signed with the SDK's signer verifies; any other secret does not.
    #[test]
    fn round_trip(secret in "[A-Za-z0-9+/]{1,40}", body in proptest::collection::vec(any::<u8>(), 0..200),
                  target in "[A-Za-z]{1,20}", region in "[a-z]{2}-[a-z]{4,8}-[1-9]") {
        let creds = ClientCredentials::new("AKIAPROP", &secret);
        let target = format!("AmazonEC2ContainerServiceV20141113.{target}");
        let own = [("host", "localhost:1"), ("x-amz-target", target.as_str())];
        let added = sign_request("POST", "http://localhost:1/", &own, &body, &creds,
            &SigningTarget { region: &region, service: "ecs", time: UNIX_EPOCH + Duration::from_secs(T0) }).unwrap();
        let mut h = headers(&own);
        for (k, v) in added {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(&v).unwrap());
        }
        let req = view("POST", "/", None, &h, &body);
        let signed = parse(&req).unwrap().unwrap();
        prop_assert_eq!(&signed.scope.region, &region);
        prop_assert!(verify(&req, &signed, &secret).is_ok());
        let wrong = format!("{secret}x");
        prop_assert!(verify(&req, &signed, &wrong).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The fast path and aws-sigv4's whole signer compute the same signature on every
    /// request the fast path takes.
    #[test]
    fn fast_path_agrees_with_aws_sigv4(
        extra in proptest::collection::vec(
            (prop_oneof![Just("content-type".to_string()), Just("x-amz-target".to_string()),
                         Just("content-length".to_string()), Just("amz-sdk-invocation-id".to_string()),
                         Just("x-amz-user-agent".to_string()), "[a-z][a-z0-9-]{0,12}"],
             proptest::collection::vec("[ -~]{0,24}", 1..3)),
            0..5),
        body in proptest::collection::vec(any::<u8>(), 0..100),
        token in proptest::option::of("[A-Za-z0-9+/=]{10,40}"),
        sign_body_hash in any::<bool>(),
        secret in "[A-Za-z0-9+/]{1,40}",
        region in "[a-z]{2}-[a-z]{4,8}-[1-9]",
        service in prop_oneof![Just("ecs"), Just("iam"), Just("sts"), Just("secretsmanager")],
        secs in 1_000_000_000i64..2_000_000_000,
    ) {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        let mut names = vec!["host".to_string(), "x-amz-date".to_string()];
        for (name, values) in &extra {
            if names.contains(name) || name.starts_with("x-amz-security") || name == "x-amz-content-sha256" {
                continue;
            }
            for v in values {
                h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            names.push(name.clone());
        }
        let amz_date = sigv4::format_amz_date(secs);
        h.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
        if let Some(t) = &token {
            h.insert("x-amz-security-token", HeaderValue::from_str(t).unwrap());
            names.push("x-amz-security-token".into());
        }
        if sign_body_hash {
            let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
            h.insert("x-amz-content-sha256", HeaderValue::from_str(&hash).unwrap());
            names.push("x-amz-content-sha256".into());
        }
        names.sort();
        let signed = sigv4::SignedRequest {
            scope: sigv4::CredentialScope {
                access_key_id: "AKIAPROP".into(),
                date: amz_date[..8].to_string(),
                region: region.clone(),
                service: service.to_string(),
            },
            signed_headers: names,
            signature: "0".repeat(64),
            amz_date: amz_date.clone(),
            time: secs,
            session_token: token.clone(),
            form: SignatureForm::Header,
        };
        let req = view("POST", "/", None, &h, &body);
        let fast = sigv4::fast_signature(&req, &signed, &secret).expect("the fast path takes it");
        let full = sigv4::expected_signature(&req, &signed, &secret).unwrap();
        prop_assert_eq!(fast, full);
    }
}

#[test]
fn fast_path_declines_what_it_does_not_cover() {
    let creds = ClientCredentials::new("AKIAEXAMPLE", "s");
    let h = signed_post(&creds, b"{}", &[]);
    let signed = parse(&view("POST", "/", None, &h, b"{}")).unwrap().unwrap();
    assert!(sigv4::fast_signature(&view("POST", "/", None, &h, b"{}"), &signed, "s").is_some());
    assert!(sigv4::fast_signature(&view("POST", "/x", None, &h, b"{}"), &signed, "s").is_none());
    assert!(
        sigv4::fast_signature(&view("POST", "/", Some("a=b"), &h, b"{}"), &signed, "s").is_none()
    );
    // The AWS test vector, through the fast path.
    let h = headers(&[
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    ]);
    let req = view("GET", "/", None, &h, b"");
    let signed = parse(&req).unwrap().unwrap();
    assert_eq!(
        sigv4::fast_signature(&req, &signed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap(),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn cached_signing_keys_follow_the_secret() {
    // The derived key is cached per key id and scope; a rotated secret (same key id)
    // must never verify with the old one's key, nor the old secret after the rotation.
    let old = ClientCredentials::new("AKIAROTATED", "old-secret");
    let new = ClientCredentials::new("AKIAROTATED", "new-secret");
    let h_old = signed_post(&old, b"{}", &[]);
    let h_new = signed_post(&new, b"{}", &[]);
    let req_old = view("POST", "/", None, &h_old, b"{}");
    let req_new = view("POST", "/", None, &h_new, b"{}");
    let signed_old = parse(&req_old).unwrap().unwrap();
    let signed_new = parse(&req_new).unwrap().unwrap();
    for _ in 0..2 {
        assert!(verify(&req_old, &signed_old, "old-secret").is_ok());
        assert!(verify(&req_new, &signed_new, "old-secret").is_err());
        assert!(verify(&req_new, &signed_new, "new-secret").is_ok());
        assert!(verify(&req_old, &signed_old, "new-secret").is_err());
    }
    sigv4::forget_signing_keys("AKIAROTATED");
    assert!(verify(&req_new, &signed_new, "new-secret").is_ok());
    assert!(verify(&req_old, &signed_old, "new-secret").is_err());
}

proptest! {
    /// The hand-rolled `X-Amz-Date` reader agrees with chrono's parser.
    #[test]
    fn amz_dates(secs in 0i64..4_000_000_000, junk in "[0-9TZ:-]{0,20}") {
        prop_assert_eq!(sigv4::parse_amz_date(&sigv4::format_amz_date(secs)), Some(secs));
        let chrono = chrono::NaiveDateTime::parse_from_str(&junk, "%Y%m%dT%H%M%SZ")
            .ok()
            .filter(|_| junk.len() == 16)
            .map(|t| t.and_utc().timestamp());
        prop_assert_eq!(sigv4::parse_amz_date(&junk), chrono);
    }
}

//! The identity store and `Iam` over a real (redb) store: authentication of signed
//! requests, policies, AssumeRole and its expiry, resolving a task's secrets, several
//! servers on one store, and secrets at rest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use berth_core::{ManualClock, Timestamp};
use berth_iam::identity::Entity;
use berth_iam::params::{ParameterType, PutParameter};
use berth_iam::secrets::{CreateSecret, SecretValue};
use berth_iam::sigv4::{sign_request, ClientCredentials, RequestView, SigningTarget};
use berth_iam::{
    AuthErrorKind, Caller, Check, ContextKeys, Iam, IamConfig, KeyOwner, Principal, Sealer,
    SecretRef, TaskSecrets,
};
use berth_store::{RedbOptions, RedbStore, Store};
use http::{HeaderMap, HeaderName, HeaderValue};

const ACCOUNT: &str = "123456789012";
const T0: i64 = 1_700_000_000_000;

struct Fixture {
    iam: Arc<Iam>,
    clock: ManualClock,
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        RedbStore::open(&dir.path().join("state.redb"), RedbOptions::default()).unwrap();
    let clock = ManualClock::at(Timestamp::from_millis(T0));
    let sealer = Arc::new(Sealer::open_or_create(&dir.path().join("master.key")).unwrap());
    let iam = Iam::open(
        Arc::clone(&store),
        Arc::clone(&sealer),
        Arc::new(clock.clone()),
        IamConfig::new(ACCOUNT, "us-east-1"),
    )
    .await
    .unwrap();
    Fixture {
        iam,
        clock,
        dir,
        store,
        sealer,
    }
}

/// A request signed at the fixture clock's time.
struct Signed {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Signed {
    fn new(creds: &ClientCredentials, service: &str, clock: &ManualClock) -> Self {
        let body = b"{}".to_vec();
        let own = [("host", "127.0.0.1:8080"), ("x-amz-target", "X.Y")];
        let added = sign_request(
            "POST",
            "http://127.0.0.1:8080/",
            &own,
            &body,
            creds,
            &SigningTarget {
                region: "us-east-1",
                service,
                time: UNIX_EPOCH + Duration::from_millis(clock_ms(clock)),
            },
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in own
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(added)
        {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        Self { headers, body }
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: "POST",
            path: "/",
            query: None,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

fn clock_ms(clock: &ManualClock) -> u64 {
    use berth_core::Clock;
    clock.now().millis() as u64
}

fn creds(id: &str, secret: &str) -> ClientCredentials {
    ClientCredentials::new(id, secret)
}

async fn user_with_key(
    f: &Fixture,
    name: &str,
    policy: Option<&str>,
) -> (Caller, ClientCredentials) {
    f.iam
        .identities
        .create_user(name, None, vec![])
        .await
        .unwrap();
    if let Some(p) = policy {
        f.iam
            .identities
            .put_inline(&Entity::User(name.into()), "p", p)
            .await
            .unwrap();
    }
    let (key, secret) = f
        .iam
        .identities
        .create_access_key(&KeyOwner::User(name.into()))
        .await
        .unwrap();
    let c = creds(&key.id, &secret);
    let caller = f
        .iam
        .authenticate(&Signed::new(&c, "ecs", &f.clock).view(), Some("ecs"))
        .unwrap();
    (caller, c)
}

#[tokio::test]
async fn bootstrap_makes_one_admin_key_and_it_authenticates() {
    let f = fixture().await;
    let admin = f
        .iam
        .bootstrap(f.dir.path())
        .await
        .unwrap()
        .expect("first start");
    assert!(f.iam.bootstrap(f.dir.path()).await.unwrap().is_none());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&admin.file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let from_file = berth_iam::read_credentials_file(&admin.file).unwrap();
    assert_eq!(from_file.access_key_id, admin.access_key_id);
    let caller = f
        .iam
        .authenticate(
            &Signed::new(&from_file, "ecs", &f.clock).view(),
            Some("ecs"),
        )
        .unwrap();
    assert_eq!(caller.principal, Principal::Root);
    assert_eq!(caller.arn(), format!("arn:aws:iam::{ACCOUNT}:root"));
}

#[tokio::test]
async fn authentication_failures_have_aws_kinds() {
    let f = fixture().await;
    let admin = f.iam.bootstrap(f.dir.path()).await.unwrap().unwrap();
    let kind = |c: &ClientCredentials, service: &str| {
        f.iam
            .authenticate(&Signed::new(c, service, &f.clock).view(), Some("ecs"))
            .unwrap_err()
            .kind
    };
    assert_eq!(
        kind(&creds("AKIANOTAKEY", "x"), "ecs"),
        AuthErrorKind::UnrecognizedClient
    );
    assert_eq!(
        kind(&creds(&admin.access_key_id, "wrong"), "ecs"),
        AuthErrorKind::InvalidSignature
    );
    assert_eq!(
        kind(
            &creds(&admin.access_key_id, &admin.secret_access_key),
            "sts"
        ),
        AuthErrorKind::InvalidSignature
    );
    let unsigned = HeaderMap::new();
    let e = f
        .iam
        .authenticate(
            &RequestView {
                method: "POST",
                path: "/",
                query: None,
                headers: &unsigned,
                body: b"",
            },
            None,
        )
        .unwrap_err();
    assert_eq!(e.kind, AuthErrorKind::MissingToken);
    assert_eq!(e.json_code(), ("MissingAuthenticationTokenException", 403));

    // Skew: a request signed 20 minutes ago.
    let old = Signed::new(
        &creds(&admin.access_key_id, &admin.secret_access_key),
        "ecs",
        &f.clock,
    );
    f.clock.advance(Duration::from_secs(20 * 60));
    let e = f.iam.authenticate(&old.view(), Some("ecs")).unwrap_err();
    assert_eq!(e.kind, AuthErrorKind::InvalidSignature);
    assert!(e.message.starts_with("Signature expired"), "{}", e.message);

    // An inactive key is unknown.
    let (_, c) = user_with_key(&f, "dora", None).await;
    f.iam
        .identities
        .update_access_key(
            &KeyOwner::User("dora".into()),
            &c.access_key_id,
            berth_iam::model::KeyStatus::Inactive,
        )
        .await
        .unwrap();
    assert_eq!(kind(&c, "ecs"), AuthErrorKind::UnrecognizedClient);
}

const ONLY_CLUSTER_A: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Action":"ecs:RunTask","Resource":"*",
     "Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:123456789012:cluster/a"}}}]}"#;

#[tokio::test]
async fn policies_decide_and_changes_apply_at_once() {
    let f = fixture().await;
    let (alice, _) = user_with_key(&f, "alice", Some(ONLY_CLUSTER_A)).await;
    let td = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1";
    let on = |cluster: &str| {
        let mut keys = ContextKeys::new();
        keys.set_one(
            "ecs:cluster",
            format!("arn:aws:ecs:us-east-1:123456789012:cluster/{cluster}"),
        );
        keys
    };
    let keys_a = on("a");
    let keys_b = on("b");
    assert!(f
        .iam
        .authorize(&alice, &Check::new("ecs:RunTask", td, &keys_a))
        .is_ok());
    let denied = f
        .iam
        .authorize(&alice, &Check::new("ecs:RunTask", td, &keys_b))
        .unwrap_err();
    assert_eq!(
        denied.message,
        format!("User: arn:aws:iam::{ACCOUNT}:user/alice is not authorized to perform: ecs:RunTask on resource: {td} because no identity-based policy allows the ecs:RunTask action")
    );
    // A managed policy with an explicit deny, attached: effective on the next request.
    f.iam
        .identities
        .create_policy(
            "no-run",
            None,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecs:Run*","Resource":"*"}}"#,
            None,
            vec![],
        )
        .await
        .unwrap();
    let arn = format!("arn:aws:iam::{ACCOUNT}:policy/no-run");
    f.iam
        .identities
        .attach_policy(&Entity::User("alice".into()), &arn)
        .await
        .unwrap();
    let denied = f
        .iam
        .authorize(&alice, &Check::new("ecs:RunTask", td, &keys_a))
        .unwrap_err();
    assert!(denied.explicit);
    assert!(denied
        .message
        .ends_with("with an explicit deny in an identity-based policy"));
    assert_eq!(
        f.iam.identities.get_policy(&arn).unwrap().attachment_count,
        1
    );
    assert_eq!(
        f.iam.identities.delete_policy(&arn).await.unwrap_err().code,
        "DeleteConflict"
    );
    f.iam
        .identities
        .detach_policy(&Entity::User("alice".into()), &arn)
        .await
        .unwrap();
    assert!(f
        .iam
        .authorize(&alice, &Check::new("ecs:RunTask", td, &keys_a))
        .is_ok());
    f.iam.identities.delete_policy(&arn).await.unwrap();
    // A user with keys or policies cannot be deleted.
    assert_eq!(
        f.iam
            .identities
            .delete_user("alice")
            .await
            .unwrap_err()
            .code,
        "DeleteConflict"
    );
}

const TRUST_ALICE: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"sts:AssumeRole"}]}"#;
const TRUST_ACCOUNT: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}"#;

#[tokio::test]
async fn assume_role_and_session_expiry() {
    let f = fixture().await;
    let (alice, _) = user_with_key(&f, "alice", None).await;
    let (bob, _) = user_with_key(&f, "bob", None).await;
    let named = f
        .iam
        .identities
        .create_role("deploy", None, TRUST_ALICE, None, None, vec![])
        .await
        .unwrap();
    f.iam
        .identities
        .put_inline(
            &Entity::Role("deploy".into()),
            "p",
            r#"{"Statement":{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"*"}}"#,
        )
        .await
        .unwrap();
    // Named in the trust policy: no identity policy needed. Bob is not named.
    let session = f
        .iam
        .assume_role(&alice, &named.arn, "ci-run", Some(900))
        .await
        .unwrap();
    assert_eq!(
        f.iam
            .assume_role(&bob, &named.arn, "x1", None)
            .await
            .unwrap_err()
            .code,
        "AccessDenied"
    );
    // Trusting the account: the caller's own policy must allow sts:AssumeRole.
    let by_account = f
        .iam
        .identities
        .create_role("reader", None, TRUST_ACCOUNT, None, None, vec![])
        .await
        .unwrap();
    assert!(f
        .iam
        .assume_role(&bob, &by_account.arn, "x2", None)
        .await
        .is_err());
    f.iam
        .identities
        .put_inline(
            &Entity::User("bob".into()),
            "assume",
            r#"{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"arn:aws:iam::123456789012:role/reader"}}"#,
        )
        .await
        .unwrap();
    f.iam
        .assume_role(&bob, &by_account.arn, "x3", None)
        .await
        .unwrap();
    // Limits.
    assert_eq!(
        f.iam
            .assume_role(&alice, &named.arn, "x4", Some(100))
            .await
            .unwrap_err()
            .code,
        "ValidationError"
    );
    assert_eq!(
        f.iam
            .assume_role(&alice, &named.arn, "x5", Some(7200))
            .await
            .unwrap_err()
            .code,
        "ValidationError"
    );
    let root = Caller::root(ACCOUNT, "AKIAROOT");
    assert_eq!(
        f.iam
            .assume_role(&root, &named.arn, "x6", None)
            .await
            .unwrap_err()
            .message,
        "Roles may not be assumed by root accounts."
    );

    // The session's credentials sign requests as the role session...
    let temp = creds(&session.access_key_id, &session.secret_access_key)
        .with_session_token(&session.session_token);
    let caller = f
        .iam
        .authenticate(&Signed::new(&temp, "ecs", &f.clock).view(), Some("ecs"))
        .unwrap();
    assert_eq!(
        caller.arn(),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/deploy/ci-run")
    );
    assert!(caller.user_id().starts_with("AROA"));
    let keys = ContextKeys::new();
    assert!(f
        .iam
        .authorize(&caller, &Check::new("ecs:ListClusters", "*", &keys))
        .is_ok());
    assert!(f
        .iam
        .authorize(&caller, &Check::new("ecs:CreateCluster", "*", &keys))
        .is_err());
    // ...need their token...
    let no_token = creds(&session.access_key_id, &session.secret_access_key);
    assert_eq!(
        f.iam
            .authenticate(&Signed::new(&no_token, "ecs", &f.clock).view(), Some("ecs"))
            .unwrap_err()
            .kind,
        AuthErrorKind::UnrecognizedClient
    );
    // ...and expire.
    f.clock.advance(Duration::from_secs(901));
    let e = f
        .iam
        .authenticate(&Signed::new(&temp, "ecs", &f.clock).view(), Some("ecs"))
        .unwrap_err();
    assert_eq!(e.kind, AuthErrorKind::ExpiredToken);
    assert_eq!(e.json_code().0, "ExpiredTokenException");
    assert_eq!(e.query_code().0, "ExpiredToken");
}

const EXEC_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

#[tokio::test]
async fn task_secrets_resolve_with_the_execution_role() {
    let f = fixture().await;
    let role = f
        .iam
        .identities
        .create_role("exec", None, EXEC_TRUST, None, None, vec![])
        .await
        .unwrap();
    let (db, _) = f
        .iam
        .secrets
        .create(CreateSecret {
            name: "db".into(),
            value: Some(SecretValue::String(
                r#"{"user":"app","password":"pw1"}"#.into(),
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    f.iam
        .parameters
        .put(PutParameter {
            name: "/app/token".into(),
            value: "tok-1".into(),
            kind: Some(ParameterType::SecureString),
            ..Default::default()
        })
        .await
        .unwrap();
    let secrets = vec![
        SecretRef {
            name: "DB".into(),
            value_from: db.arn.clone(),
        },
        SecretRef {
            name: "DB_PASSWORD".into(),
            value_from: format!("{}:password::", db.arn),
        },
        SecretRef {
            name: "TOKEN".into(),
            value_from: "/app/token".into(),
        },
    ];
    let task = TaskSecrets {
        task_arn: "arn:aws:ecs:us-east-1:123456789012:task/c/abc",
        execution_role_arn: Some(&role.arn),
        secrets: &secrets,
    };
    // No permission yet.
    let e = f.iam.resolve_secrets(&task).await.unwrap_err();
    assert!(
        e.message
            .starts_with("ResourceInitializationError: unable to pull secrets or registry auth"),
        "{e}"
    );
    assert!(e.message.contains("AccessDeniedException"), "{e}");
    assert!(e.message.contains("assumed-role/exec/abc"), "{e}");
    f.iam
        .identities
        .put_inline(
            &Entity::Role("exec".into()),
            "secrets",
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"arn:aws:secretsmanager:*:*:secret:db-*"},
                {"Effect":"Allow","Action":"ssm:GetParameters","Resource":"arn:aws:ssm:*:*:parameter/app/*"}]}"#,
        )
        .await
        .unwrap();
    let values = f.iam.resolve_secrets(&task).await.unwrap();
    assert_eq!(
        values,
        vec![
            (
                "DB".to_string(),
                r#"{"user":"app","password":"pw1"}"#.to_string()
            ),
            ("DB_PASSWORD".to_string(), "pw1".to_string()),
            ("TOKEN".to_string(), "tok-1".to_string()),
        ]
    );
    // Missing json key, missing parameter, no role, untrusting role.
    let bad = [SecretRef {
        name: "X".into(),
        value_from: format!("{}:nope::", db.arn),
    }];
    let e = f
        .iam
        .resolve_secrets(&TaskSecrets {
            secrets: &bad,
            ..task.clone()
        })
        .await
        .unwrap_err();
    assert!(e.message.contains("did not contain json key nope"), "{e}");
    let bad = [SecretRef {
        name: "X".into(),
        value_from: "/app/missing".into(),
    }];
    let e = f
        .iam
        .resolve_secrets(&TaskSecrets {
            secrets: &bad,
            ..task.clone()
        })
        .await
        .unwrap_err();
    assert!(
        e.message.contains("invalid parameters: /app/missing"),
        "{e}"
    );
    let e = f
        .iam
        .resolve_secrets(&TaskSecrets {
            execution_role_arn: None,
            ..task.clone()
        })
        .await
        .unwrap_err();
    assert!(e.message.contains("executionRoleArn"), "{e}");
    let other = f
        .iam
        .identities
        .create_role("not-for-ecs", None, TRUST_ACCOUNT, None, None, vec![])
        .await
        .unwrap();
    let e = f
        .iam
        .resolve_secrets(&TaskSecrets {
            execution_role_arn: Some(&other.arn),
            ..task.clone()
        })
        .await
        .unwrap_err();
    assert!(
        e.message.contains("ECS was unable to assume the role"),
        "{e}"
    );
}

#[tokio::test]
async fn a_second_server_sees_changes_through_the_watch() {
    let f = fixture().await;
    let second = Iam::open(
        Arc::clone(&f.store),
        Arc::clone(&f.sealer),
        Arc::new(f.clock.clone()),
        IamConfig::new(ACCOUNT, "us-east-1"),
    )
    .await
    .unwrap();
    let (_, c) = user_with_key(&f, "carol", None).await;
    // The other server learns of the key within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match second.authenticate(&Signed::new(&c, "ecs", &f.clock).view(), Some("ecs")) {
            Ok(caller) => {
                assert!(matches!(caller.principal, Principal::User { .. }));
                break;
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never saw the key: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn file_contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secrets_are_not_in_the_store_file() {
    let f = fixture().await;
    let admin = f.iam.bootstrap(f.dir.path()).await.unwrap().unwrap();
    let (_, c) = user_with_key(&f, "erin", None).await;
    f.iam
        .secrets
        .create(CreateSecret {
            name: "plain-check".into(),
            value: Some(SecretValue::String("PLAINTEXT-SECRET-4711".into())),
            ..Default::default()
        })
        .await
        .unwrap();
    f.iam
        .parameters
        .put(PutParameter {
            name: "/p/plain".into(),
            value: "PLAINTEXT-PARAM-4712".into(),
            kind: Some(ParameterType::String),
            ..Default::default()
        })
        .await
        .unwrap();
    let db = f.dir.path().join("state.redb");
    // Sanity: the store file is readable and holds the names.
    assert!(file_contains(&db, "plain-check"));
    for secret in [
        "PLAINTEXT-SECRET-4711",
        "PLAINTEXT-PARAM-4712",
        admin.secret_access_key.as_str(),
        c.secret_access_key.as_str(),
    ] {
        assert!(!file_contains(&db, secret), "{secret} is in the store file");
    }
}

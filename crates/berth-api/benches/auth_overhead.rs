//! What authentication and authorization cost per request, against what a whole
//! `DescribeClusters` costs the server.
//!
//!     cargo bench -p berth-api --bench auth_overhead
//!
//! An in-process berth (redb store in a temp dir, the real router) serves a user whose
//! policy has a few statements (one with a condition). Requests are signed once by the
//! client side (outside the timing) and replayed; the server verifies each one.
//! Rows:
//! - SigV4 verification (`Iam::authenticate`: parse, clock, key lookup, recompute with
//!   aws-sigv4, constant-time compare);
//! - policy evaluation (`ecs_authz::authorize`: the table, the request's resources and
//!   keys, evaluation, the audit event);
//! - both, as the endpoint runs them;
//! - `DescribeClusters` through the router with auth on (the server's total, minus the
//!   socket), and with `--insecure-any-credentials` (no verification, no policies);
//! - `DescribeClusters` over HTTP/1.1 on loopback (`berth_api::serve` on its own thread, one
//!   keep-alive connection): the server's CPU time, i.e. the process's minus the client
//!   thread's, with auth on and with `--insecure-any-credentials`. This is the request a
//!   client actually makes; the target is measured against it.
//!
//! Times are CPU time of the process per request (all threads, `getrusage`), the best of
//! five rounds: on a shared machine wall time mostly measures the neighbours.
//!
//! Target: authentication + authorization under 5% of the authenticated request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use berth_api::{AppState, ServerLimits};
use berth_control::{ControlConfig, ControlPlane};
use berth_core::SystemClock;
use berth_iam::identity::Entity;
use berth_iam::sigv4::{sign_request, ClientCredentials, RequestView, SigningTarget};
use berth_iam::{AuthMode, Iam, IamConfig, KeyOwner, Sealer};
use berth_store::{RedbOptions, RedbStore, Store};
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";
const TARGET: &str = "AmazonEC2ContainerServiceV20141113.DescribeClusters";
const BODY: &str = r#"{"clusters":["bench"]}"#;

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"Read","Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],
   "Resource":["arn:aws:ecs:us-east-1:000000000000:cluster/bench","arn:aws:ecs:*:*:service/bench/*"]},
  {"Sid":"Run","Effect":"Allow","Action":"ecs:RunTask","Resource":"*",
   "Condition":{"ArnEquals":{"ecs:cluster":"arn:aws:ecs:us-east-1:000000000000:cluster/bench"}}},
  {"Sid":"NoDelete","Effect":"Deny","Action":"ecs:Delete*","Resource":"*"},
  {"Sid":"Tags","Effect":"Allow","Action":"ecs:TagResource","Resource":"*",
   "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["team","env"]}}}]}"#;

struct Signed {
    headers: HeaderMap,
}

fn sign(creds: &ClientCredentials, body: &str) -> Signed {
    let own = [
        ("host", HOST),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", TARGET),
    ];
    let added = sign_request(
        "POST",
        &format!("http://{HOST}/"),
        &own,
        body.as_bytes(),
        creds,
        &SigningTarget {
            region: "us-east-1",
            service: "ecs",
            time: SystemTime::now(),
        },
    )
    .expect("sign");
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
    Signed { headers }
}

fn request(signed: &Signed, body: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/")
        .body(Body::from(body.to_string()))
        .unwrap();
    *req.headers_mut() = signed.headers.clone();
    req
}

async fn state(dir: &std::path::Path, mode: AuthMode) -> Arc<AppState> {
    let store: Arc<dyn Store> =
        RedbStore::open(&dir.join("state.redb"), RedbOptions::default()).unwrap();
    let control = ControlPlane::new(Arc::clone(&store), ControlConfig::default());
    let mut config = IamConfig::new("000000000000", "us-east-1");
    config.mode = mode;
    let iam = Iam::open(
        store,
        Arc::new(Sealer::open_or_create(&dir.join("master.key")).unwrap()),
        Arc::new(SystemClock),
        config,
    )
    .await
    .unwrap();
    Arc::new(AppState {
        control_plane_id: control.identity().await.unwrap(),
        control,
        limits: ServerLimits::default(),
        iam,
        tls: false,
    })
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The server's CPU time per `DescribeClusters` over HTTP/1.1 on loopback (one keep-alive
/// connection), as a real client's request costs it: `berth_api::serve` on its own thread
/// and runtime; the server's share is the process's CPU time minus the client thread's.
/// The best of 5 rounds of `n`.
async fn over_http(app: Arc<AppState>, signed: &Signed, n: u32) -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let router = berth_api::router(app);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = berth_api::serve(
                listener,
                router,
                ServerLimits::default(),
                std::future::pending(),
            )
            .await;
        });
    });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");
    // The Host header the request was signed with (hyper keeps one that is set).
    let call = || async {
        let resp = client
            .post(&url)
            .headers(signed.headers.clone())
            .body(BODY)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let _ = resp.bytes().await.unwrap();
    };
    for _ in 0..(n / 10).max(10) {
        call().await;
    }
    let mut best: Option<Duration> = None;
    for _ in 0..5 {
        let (process, client_thread) = (cpu_time(), thread_cpu_time());
        for _ in 0..n {
            call().await;
        }
        let server = (cpu_time() - process).saturating_sub(thread_cpu_time() - client_thread);
        let round = server / n;
        if best.is_none_or(|b| round < b) {
            best = Some(round);
        }
    }
    best.expect("five rounds")
}

/// CPU time this process has used (all threads: the store's blocking reads included).
fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time and wall time per call of `f`: the best of 5 rounds of `n` calls (after a
/// warm-up). CPU time is what the request costs the machine and does not count waiting for
/// a core the rest of the machine is using; the best round is the one least disturbed.
async fn time<F, Fut>(n: u32, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..(n / 10).max(10) {
        f().await;
    }
    let mut best: Option<(Duration, Duration)> = None;
    for _ in 0..5 {
        let (cpu, wall) = (cpu_time(), Instant::now());
        for _ in 0..n {
            f().await;
        }
        let round = ((cpu_time() - cpu) / n, wall.elapsed() / n);
        if best.is_none_or(|b| round.0 < b.0) {
            best = Some(round);
        }
    }
    best.expect("five rounds")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The audit trail is a tracing event per decision; measure with a subscriber that
    // formats it, as a server does (into a sink: the terminal would dominate).
    tracing_subscriber_sink();
    let n: u32 = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    let dir = tempfile::tempdir().unwrap();
    let app = state(dir.path(), AuthMode::Verify).await;
    let (root_id, root_secret) = app.iam.identities.bootstrap_admin().await.unwrap().unwrap();
    let root = ClientCredentials::new(root_id, root_secret);
    let router = berth_api::router(Arc::clone(&app));
    // Set up: a cluster, and a user with a policy and a key.
    let create = r#"{"clusterName":"bench"}"#;
    let mut create_req = sign(&root, create);
    create_req.headers.insert(
        "x-amz-target",
        HeaderValue::from_static("AmazonEC2ContainerServiceV20141113.CreateCluster"),
    );
    // Re-sign: the target is a signed header.
    let create_req = {
        let own = [
            ("host", HOST),
            ("content-type", "application/x-amz-json-1.1"),
            (
                "x-amz-target",
                "AmazonEC2ContainerServiceV20141113.CreateCluster",
            ),
        ];
        let added = sign_request(
            "POST",
            &format!("http://{HOST}/"),
            &own,
            create.as_bytes(),
            &root,
            &SigningTarget {
                region: "us-east-1",
                service: "ecs",
                time: SystemTime::now(),
            },
        )
        .unwrap();
        for (k, v) in added {
            create_req.headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        create_req
    };
    let resp = router
        .clone()
        .oneshot(request(&create_req, create))
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "CreateCluster: {}",
        resp.status()
    );
    app.iam
        .identities
        .create_user("bench", None, vec![])
        .await
        .unwrap();
    app.iam
        .identities
        .put_inline(&Entity::User("bench".into()), "p", POLICY)
        .await
        .unwrap();
    let (key, secret) = app
        .iam
        .identities
        .create_access_key(&KeyOwner::User("bench".into()))
        .await
        .unwrap();
    let user = ClientCredentials::new(key.id.clone(), secret);
    let signed = sign(&user, BODY);

    // The pieces, called as the endpoint calls them.
    let uri: Uri = "/".parse().unwrap();
    let view = RequestView {
        method: "POST",
        path: uri.path(),
        query: None,
        headers: &signed.headers,
        body: BODY.as_bytes(),
    };
    let caller = app.iam.authenticate(&view, Some("ecs")).unwrap();
    let signed_request = berth_iam::sigv4::parse(&view).unwrap().unwrap();
    let parse = time(n, || async {
        let s = berth_iam::sigv4::parse(&view).unwrap().unwrap();
        berth_iam::sigv4::check_time(&s, berth_iam::sigv4::epoch_secs(SystemTime::now())).unwrap();
        std::hint::black_box(s);
    })
    .await;
    let material = app.iam.identities.key_material(&key.id).unwrap().unwrap();
    let recompute = time(n, || async {
        berth_iam::sigv4::verify(&view, &signed_request, &material.secret).unwrap();
    })
    .await;
    let set = app.iam.policy_set(&caller).unwrap();
    let mut keys = berth_iam::ContextKeys::new();
    keys.set_one(
        "ecs:cluster",
        "arn:aws:ecs:us-east-1:000000000000:cluster/bench",
    );
    let evaluate = time(n, || async {
        let d = berth_iam::policy::evaluate(
            set.docs.iter().map(|d| d.as_ref()),
            &berth_iam::policy::RequestContext {
                action: "ecs:DescribeClusters",
                resource: "arn:aws:ecs:us-east-1:000000000000:cluster/bench",
                keys: &keys,
            },
        );
        assert_eq!(d, berth_iam::policy::Decision::Allow);
    })
    .await;
    let verify = time(n, || async {
        std::hint::black_box(app.iam.authenticate(&view, Some("ecs")).unwrap());
    })
    .await;
    let authorize = time(n, || async {
        berth_api::ecs_authz::authorize(&app, &caller, "DescribeClusters", BODY.as_bytes())
            .await
            .unwrap();
    })
    .await;
    let both = time(n, || async {
        let c = app.iam.authenticate(&view, Some("ecs")).unwrap();
        berth_api::ecs_authz::authorize(&app, &c, "DescribeClusters", BODY.as_bytes())
            .await
            .unwrap();
    })
    .await;
    let full = time(n, || async {
        let resp = router
            .clone()
            .oneshot(request(&signed, BODY))
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
    })
    .await;

    // The same request to a server that checks nothing.
    let dir2 = tempfile::tempdir().unwrap();
    let open = state(dir2.path(), AuthMode::InsecureAnyCredentials).await;
    let open_router = berth_api::router(Arc::clone(&open));
    let resp = open_router
        .clone()
        .oneshot(request(&create_req, create))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let http = over_http(Arc::clone(&app), &signed, n).await;
    let http_unchecked = over_http(Arc::clone(&open), &signed, n).await;
    let unchecked = time(n, || async {
        let resp = open_router
            .clone()
            .oneshot(request(&signed, BODY))
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
    })
    .await;

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / full.0.as_secs_f64();
    println!(
        "auth_overhead: best of 5 rounds of {n} requests; DescribeClusters of 1 cluster by a \
         user with a 4-statement policy; CPU µs per request (all threads), wall µs for reference"
    );
    println!(
        "{:<60} {:>9} {:>9} {:>11}",
        "", "CPU µs", "wall µs", "% of total"
    );
    for (name, d) in [
        ("  sigv4::parse + clock check", parse),
        ("  aws-sigv4 recompute + constant-time compare", recompute),
        ("SigV4 verification (Iam::authenticate, all of it)", verify),
        ("  policy evaluation alone (policy::evaluate)", evaluate),
        (
            "policy evaluation (ecs_authz::authorize: plan, evaluate, audit)",
            authorize,
        ),
        (
            "authentication + authorization, as the endpoint runs them",
            both,
        ),
        ("DescribeClusters through the router, auth on (total)", full),
        ("DescribeClusters, --insecure-any-credentials", unchecked),
    ] {
        println!(
            "{name:<60} {:>9.2} {:>9.2} {:>10.1}%",
            us(d.0),
            us(d.1),
            pct(d.0)
        );
    }
    println!(
        "{:<60} {:>9.2} {:>9} {:>10.1}%",
        "DescribeClusters over HTTP (loopback, keep-alive), server CPU",
        us(http),
        "",
        pct(http)
    );
    println!(
        "{:<60} {:>9.2} {:>9} {:>10.1}%",
        "  the same, --insecure-any-credentials",
        us(http_unchecked),
        "",
        pct(http_unchecked)
    );
    let share = pct(both.0);
    let http_share = 100.0 * both.0.as_secs_f64() / http.as_secs_f64();
    println!(
        "authentication + authorization = {share:.1}% of the request's CPU cost in the router \
         (no HTTP, no socket), {http_share:.1}% of its cost over HTTP (target < 5%): {}",
        if http_share < 5.0 { "met" } else { "NOT met" }
    );
}

/// A tracing subscriber that formats events (as the server's does) into a sink.
fn tracing_subscriber_sink() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
}

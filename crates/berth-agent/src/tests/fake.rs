//! An in-memory control plane speaking the agent channel over real HTTP, so tests exercise
//! the agent's client too. Tests set assignments and read what the agent reported.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_agent_proto::{self as proto, paths, AssignedTask, InstanceCredential};
use berth_core::records::TaskReport;
use berth_core::status::{DesiredStatus, TaskStatus};
use serde_json::{json, Value};
use tokio::sync::watch;

pub const CONTROL_PLANE_ID: &str = "cp-test";

#[derive(Debug, Clone)]
pub struct Instance {
    pub cluster: String,
    pub agent_id: String,
    pub credential: String,
    pub registered: bool,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub assigned: AssignedTask,
    /// What report answers say, if not the assignment's desired status.
    pub answer_desired: Option<DesiredStatus>,
}

#[derive(Debug, Default)]
pub struct State {
    pub clusters: BTreeSet<String>,
    pub instances: BTreeMap<String, Instance>,
    pub tasks: BTreeMap<String, Task>,
    pub reports: Vec<(String, TaskReport)>,
    pub registrations: Vec<proto::RegisterRequest>,
    pub created_clusters: Vec<String>,
    /// Refuse a re-registration with an unknown credential instead of making a new instance.
    pub refuse_unknown_credentials: bool,
    /// Fail this many reports with a 500 before accepting them.
    pub fail_reports: u32,
    pub ownership_questions: Vec<Vec<String>>,
    next_id: u64,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn reports_of(&self, task: &str) -> Vec<TaskReport> {
        self.reports
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn instance_of(&self, cluster: &str) -> Option<String> {
        self.instances
            .iter()
            .find(|(_, i)| i.cluster == cluster && i.registered)
            .map(|(arn, _)| arn.clone())
    }

    fn check(&self, c: &InstanceCredential) -> Result<&Instance, Refusal> {
        match self.instances.get(&c.container_instance_arn) {
            Some(i) if i.credential == c.credential => Ok(i),
            Some(_) => Err(Refusal(
                "AccessDeniedException",
                "The agent credential is not valid for this container instance.",
            )),
            None => Err(Refusal(
                "InvalidParameterException",
                "Container instance not found.",
            )),
        }
    }

    fn poll_answer(&self, req: &proto::PollRequest) -> Result<proto::PollResponse, Refusal> {
        let mut active = vec![];
        for c in &req.instances {
            if self.check(c)?.registered {
                active.push(c.container_instance_arn.clone());
            }
        }
        let tasks: Vec<AssignedTask> = self
            .tasks
            .values()
            .filter(|t| {
                active.contains(&t.assigned.container_instance_arn)
                    && !t.assigned.known_status.is_terminal()
            })
            .map(|t| t.assigned.clone())
            .collect();
        let clusters: Vec<String> = if req.follow_all_clusters {
            self.clusters.iter().cloned().collect()
        } else {
            vec![]
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&active, &clusters).hash(&mut hasher);
        for t in &tasks {
            (&t.task_arn, t.desired_status.as_str()).hash(&mut hasher);
        }
        Ok(proto::PollResponse {
            digest: format!("{:016x}", hasher.finish()),
            tasks,
            active_instances: active,
            clusters,
        })
    }
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every change: wakes long polls and waiting tests.
    changes: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct FakeControlPlane {
    pub url: String,
    inner: Arc<Inner>,
}

/// A 400 with an AWS JSON error.
struct Refusal(&'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0, self.1)
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"__type": code, "message": message}))).into_response()
}

impl FakeControlPlane {
    /// Serves on 127.0.0.1 with a "default" cluster.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                clusters: BTreeSet::from(["default".to_string()]),
                ..State::default()
            }),
            changes: watch::channel(0).0,
        });
        let app = Router::new()
            .route(paths::REGISTER, post(register))
            .route(paths::POLL, post(poll))
            .route(paths::REPORT, post(report))
            .route(paths::OWNERSHIP, post(ownership))
            .route("/", post(ecs))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    /// Reads or changes the state (waking polls).
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = f(&mut self.inner.state.lock().unwrap());
        self.inner.changes.send_modify(|n| *n += 1);
        out
    }

    /// Waits (in tokio time) until `f` says yes.
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn(&State) -> Option<T>) -> T {
        let mut changes = self.inner.changes.subscribe();
        let wait = async {
            loop {
                if let Some(out) = f(&self.inner.state.lock().unwrap()) {
                    return out;
                }
                // Also re-check now and then: some conditions depend on the runtime.
                let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(900), wait).await {
            Ok(out) => out,
            Err(_) => panic!(
                "timed out waiting for {what}; reports: {:#?}",
                self.inner.state.lock().unwrap().reports
            ),
        }
    }

    pub async fn instance(&self, cluster: &str) -> String {
        self.wait_for("the agent to register", |s| s.instance_of(cluster))
            .await
    }

    /// Assigns a task with this definition to the instance; returns its ARN.
    pub fn assign(&self, instance: &str, task_definition: Value) -> String {
        self.assign_with(instance, task_definition, |_| {})
    }

    pub fn assign_with(
        &self,
        instance: &str,
        task_definition: Value,
        tweak: impl FnOnce(&mut AssignedTask),
    ) -> String {
        self.with(|s| {
            let id = s.next_id();
            let cluster = s.instances[instance].cluster.clone();
            let arn = format!("arn:aws:ecs:us-east-1:000000000000:task/{cluster}/{id:032x}");
            let mut assigned = AssignedTask {
                task_arn: arn.clone(),
                cluster,
                container_instance_arn: instance.to_string(),
                desired_status: DesiredStatus::Running,
                known_status: TaskStatus::Provisioning,
                family: task_definition["family"]
                    .as_str()
                    .unwrap_or("fam")
                    .to_string(),
                revision: 1,
                task_definition,
                overrides: Value::Null,
                cpu: None,
                memory: None,
                group: None,
                availability_zone: None,
                container_arns: Default::default(),
            };
            tweak(&mut assigned);
            s.tasks.insert(
                arn.clone(),
                Task {
                    assigned,
                    answer_desired: None,
                },
            );
            arn
        })
    }

    pub fn set_desired(&self, task: &str, desired: DesiredStatus) {
        self.with(|s| s.tasks.get_mut(task).unwrap().assigned.desired_status = desired);
    }

    /// Waits for a report of this status; returns it.
    pub async fn wait_status(&self, task: &str, status: TaskStatus) -> TaskReport {
        self.wait_for(&format!("{task} {status}"), |s| {
            s.reports_of(task).into_iter().find(|r| r.status == status)
        })
        .await
    }
}

type Shared = AxState<Arc<Inner>>;

async fn register(AxState(inner): Shared, Json(req): Json<proto::RegisterRequest>) -> Response {
    let mut s = inner.state.lock().unwrap();
    s.registrations.push(req.clone());
    if !s.clusters.contains(&req.cluster) {
        return error(
            StatusCode::BAD_REQUEST,
            "ClusterNotFoundException",
            "Cluster not found.",
        );
    }
    let existing = match (&req.container_instance_arn, &req.credential) {
        (Some(arn), Some(credential)) => match s.instances.get(arn) {
            Some(i) if i.registered && &i.credential == credential => Some(arn.clone()),
            _ if s.refuse_unknown_credentials => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "AccessDeniedException",
                    "The agent credential is not valid for this container instance.",
                )
            }
            _ => None,
        },
        _ => None,
    };
    let arn = existing.unwrap_or_else(|| {
        let id = s.next_id();
        let arn = format!(
            "arn:aws:ecs:us-east-1:000000000000:container-instance/{}/{id:032x}",
            req.cluster
        );
        let instance = Instance {
            cluster: req.cluster.clone(),
            agent_id: req.agent_id.clone(),
            credential: format!("secret-{id}"),
            registered: true,
        };
        s.instances.insert(arn.clone(), instance);
        arn
    });
    let credential = s.instances[&arn].credential.clone();
    drop(s);
    inner.changes.send_modify(|n| *n += 1);
    Json(proto::RegisterResponse {
        container_instance_arn: arn,
        credential,
        control_plane_id: CONTROL_PLANE_ID.into(),
    })
    .into_response()
}

async fn poll(AxState(inner): Shared, Json(req): Json<proto::PollRequest>) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds);
    let mut changes = inner.changes.subscribe();
    loop {
        let answer = inner.state.lock().unwrap().poll_answer(&req);
        match answer {
            Err(refused) => return refused.into_response(),
            Ok(a) if req.known_digest.as_deref() != Some(a.digest.as_str()) => {
                return Json(a).into_response()
            }
            Ok(a) => {
                if tokio::time::timeout_at(deadline, changes.changed())
                    .await
                    .is_err()
                {
                    return Json(a).into_response();
                }
            }
        }
    }
}

async fn report(AxState(inner): Shared, Json(req): Json<proto::ReportRequest>) -> Response {
    let mut s = inner.state.lock().unwrap();
    if let Err(refused) = s.check(&req.instance) {
        return refused.into_response();
    }
    if s.fail_reports > 0 {
        s.fail_reports -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "try again",
        );
    }
    let Some(task) = s.tasks.get_mut(&req.task_arn) else {
        return error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            "not your task",
        );
    };
    if task.assigned.container_instance_arn != req.instance.container_instance_arn {
        return error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            "not your task",
        );
    }
    let a = &mut task.assigned;
    if !a.known_status.is_terminal() && req.report.status > a.known_status {
        a.known_status = req.report.status;
        if req.report.status.is_terminal() {
            a.desired_status = DesiredStatus::Stopped;
        }
    }
    let desired = task.answer_desired.unwrap_or(a.desired_status);
    s.reports.push((req.task_arn.clone(), req.report));
    drop(s);
    inner.changes.send_modify(|n| *n += 1);
    Json(proto::ReportResponse {
        desired_status: desired,
    })
    .into_response()
}

async fn ownership(AxState(inner): Shared, Json(req): Json<proto::OwnershipRequest>) -> Response {
    let mut s = inner.state.lock().unwrap();
    if let Err(refused) = s.check(&req.instance) {
        return refused.into_response();
    }
    s.ownership_questions.push(req.task_arns.clone());
    let orphaned = req
        .task_arns
        .into_iter()
        .filter(|arn| {
            s.tasks
                .get(arn)
                .is_none_or(|t| t.assigned.known_status.is_terminal())
        })
        .collect();
    Json(proto::OwnershipResponse { orphaned }).into_response()
}

/// The ECS JSON 1.1 endpoint: CreateCluster only.
async fn ecs(AxState(inner): Shared, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    // JSON 1.1 bodies come as application/x-amz-json-1.1, which axum's `Json` refuses.
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !target.ends_with(".CreateCluster") {
        return error(StatusCode::BAD_REQUEST, "UnknownOperationException", target);
    }
    let name = body["clusterName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    {
        let mut s = inner.state.lock().unwrap();
        s.clusters.insert(name.clone());
        s.created_clusters.push(name.clone());
    }
    inner.changes.send_modify(|n| *n += 1);
    Json(json!({"cluster": {"clusterName": name, "status": "ACTIVE"}})).into_response()
}

//! The task metadata endpoint, version 4, as the ECS agent serves it: every container gets
//! `ECS_CONTAINER_METADATA_URI_V4` and can GET
//!
//! - `${ECS_CONTAINER_METADATA_URI_V4}`: its own metadata;
//! - `…/task` (and `…/taskWithTags`, without tags): its task's, with all its containers;
//! - `…/stats`: its Docker stats; `…/task/stats`: every container's, by Docker id.
//!
//! The agent serves it on addresses the task's containers reach: for the `bridge` network
//! mode the Docker bridge's gateway (e.g. `http://172.17.0.1:<port>`), for `host` the
//! loopback; containers in the `none` mode (or with `disableNetworking`) have no network and
//! get no endpoint. The ports are chosen by the system and kept in the agent's data
//! directory, so several agents on one host don't collide and a restarted agent answers the
//! URIs its containers already have. Each container's URI carries a random token (also its
//! `berth.metadata-token` label): it names the container and is the only way to read a task.
//!
//! The same listeners serve the ECS container credentials endpoint for tasks with a task
//! role: `GET /v2/credentials/<id>` with `Authorization: <token>` answers
//! `{"RoleArn","AccessKeyId","SecretAccessKey","Token","Expiration"}`. Containers get the
//! URI in `AWS_CONTAINER_CREDENTIALS_FULL_URI` and the token in
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`, as the AWS SDKs' container credential provider
//! reads them. The id and token are derived from the task ARN with a key kept in the data
//! directory, so a restarted agent answers the containers it adopts; the credentials
//! themselves live in memory only.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::records::NetworkBinding;
use berth_core::status::{ContainerStatus, DesiredStatus, HealthStatus, NetworkMode, TaskStatus};
use berth_core::Timestamp;
use berth_runtime::ContainerRuntime;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

/// Where the ports are kept.
const STATE_FILE: &str = "metadata-endpoint.json";
/// The key task credential ids and tokens are derived with (mode 0600).
const CREDENTIALS_KEY_FILE: &str = "task-credentials.key";

/// A task's role credentials as the endpoint serves them; refreshed by the task's runner.
pub(crate) type SharedCredentials = Arc<RwLock<Option<berth_agent_proto::TaskCredentialsResponse>>>;

/// One task's credentials entry.
struct CredentialsEntry {
    token: String,
    view: SharedView,
    credentials: SharedCredentials,
}

/// What the endpoint knows of one task, kept current by its runner.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskView {
    pub cluster: String,
    pub task_arn: String,
    pub family: String,
    pub revision: u32,
    pub desired_status: Option<DesiredStatus>,
    pub known_status: Option<TaskStatus>,
    /// Task-level CPU units and MiB.
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub pull_started_at: Option<Timestamp>,
    pub pull_stopped_at: Option<Timestamp>,
    pub execution_stopped_at: Option<Timestamp>,
    pub availability_zone: Option<String>,
    pub service_name: Option<String>,
    pub network_mode: Option<NetworkMode>,
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerView {
    pub name: String,
    pub docker_id: Option<String>,
    pub docker_name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub desired_status: Option<DesiredStatus>,
    pub known_status: Option<ContainerStatus>,
    pub exit_code: Option<i32>,
    pub cpu: u64,
    pub memory: Option<i64>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
    pub ports: Vec<NetworkBinding>,
    pub health: Option<HealthStatus>,
    /// (source on the host or volume name, destination in the container)
    pub volumes: Vec<(String, String)>,
    pub restart_count: Option<u32>,
    pub container_arn: Option<String>,
    pub network_disabled: bool,
}

/// A task's view, shared between its runner (writer) and the endpoint (reader).
pub(crate) type SharedView = Arc<RwLock<TaskView>>;

/// Tokens to (task, container name).
#[derive(Default)]
struct Registry {
    entries: RwLock<HashMap<String, (SharedView, String)>>,
    /// Credentials ids to their task's entry.
    credentials: RwLock<HashMap<String, CredentialsEntry>>,
}

/// The endpoint: its listeners and what they serve.
pub(crate) struct MetadataEndpoint {
    registry: Arc<Registry>,
    credentials_key: [u8; 32],
    bridge: Option<SocketAddr>,
    loopback: Option<SocketAddr>,
    /// `169.254.170.2:<bridge port>` reaches the bridge listener (see [`LinkLocalRoute`]).
    link_local: Option<LinkLocalRoute>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for MetadataEndpoint {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// ECS's credentials address. The AWS SDKs accept a plain-HTTP
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI` only on loopback or on this address, so bridge-mode
/// containers are given `http://169.254.170.2:<port>/…`, which a DNAT rule on the host sends
/// to the agent's listener on the bridge gateway (the ECS agent adds the same kind of rule).
const ECS_CREDENTIALS_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);

/// The DNAT rules `169.254.170.2:<port>` → the bridge listener, for containers
/// (PREROUTING) and for the host itself (OUTPUT); removed when dropped.
pub(crate) struct LinkLocalRoute {
    port: u16,
    rule: Vec<String>,
}

const LINK_LOCAL_CHAINS: [&str; 2] = ["PREROUTING", "OUTPUT"];

impl LinkLocalRoute {
    fn iptables(op: &str, chain: &str, rule: &[String]) -> bool {
        std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", op, chain])
            .args(rule)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Adds the rule unless it is there (an agent restarted on its saved port finds it).
    fn install(bridge: SocketAddr) -> Option<Self> {
        let port = bridge.port();
        let rule: Vec<String> = [
            "-d",
            &format!("{ECS_CREDENTIALS_IP}/32"),
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
            "DNAT",
            "--to-destination",
            &bridge.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let installed = LINK_LOCAL_CHAINS
            .iter()
            .all(|chain| Self::iptables("-C", chain, &rule) || Self::iptables("-A", chain, &rule));
        if installed {
            Some(Self { port, rule })
        } else {
            for chain in LINK_LOCAL_CHAINS {
                Self::iptables("-D", chain, &rule);
            }
            tracing::warn!(%bridge, "cannot add the iptables rule for 169.254.170.2 (not root, or no iptables): \
                bridge-mode containers get the credentials endpoint on the bridge gateway, which AWS SDKs refuse");
            None
        }
    }
}

impl Drop for LinkLocalRoute {
    fn drop(&mut self) {
        for chain in LINK_LOCAL_CHAINS {
            Self::iptables("-D", chain, &self.rule);
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedPorts {
    bridge_port: Option<u16>,
    loopback_port: Option<u16>,
}

struct AppState {
    registry: Arc<Registry>,
    runtime: Arc<dyn ContainerRuntime>,
}

/// Binds `ip:port` if `port` is still free, else a port the system picks.
async fn bind(ip: IpAddr, saved: Option<u16>) -> std::io::Result<tokio::net::TcpListener> {
    if let Some(port) = saved {
        match tokio::net::TcpListener::bind((ip, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => tracing::warn!(%ip, port, error = %e,
                "the metadata endpoint's previous port is taken; containers started before \
                 the restart lose their endpoint"),
        }
    }
    tokio::net::TcpListener::bind((ip, 0)).await
}

impl MetadataEndpoint {
    /// Starts the listeners: on the bridge gateway (if the engine has one) and loopback.
    pub async fn start(
        runtime: Arc<dyn ContainerRuntime>,
        bridge_ip: Option<IpAddr>,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let path = data_dir.join(STATE_FILE);
        let saved: SavedPorts = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let registry = Arc::new(Registry::default());
        let state = Arc::new(AppState {
            registry: Arc::clone(&registry),
            runtime,
        });
        let app = Router::new()
            .route("/v4/{token}", get(container))
            .route("/v4/{token}/task", get(task))
            .route("/v4/{token}/taskWithTags", get(task))
            .route("/v4/{token}/stats", get(container_stats))
            .route("/v4/{token}/task/stats", get(task_stats))
            .route("/v2/credentials/{id}", get(credentials))
            .with_state(state);
        let mut servers = Vec::new();
        let mut serve = |listener: tokio::net::TcpListener| -> std::io::Result<SocketAddr> {
            let addr = listener.local_addr()?;
            let app = app.clone();
            servers.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(%addr, error = %e, "the task metadata endpoint stopped");
                }
            }));
            Ok(addr)
        };
        let loopback = match bind(IpAddr::V4(Ipv4Addr::LOCALHOST), saved.loopback_port).await {
            Ok(l) => Some(serve(l)?),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve the task metadata endpoint on loopback; host-mode tasks get none");
                None
            }
        };
        let bridge = match bridge_ip {
            Some(ip) if ip.is_loopback() => loopback,
            Some(ip) => match bind(ip, saved.bridge_port).await {
                Ok(l) => Some(serve(l)?),
                Err(e) => {
                    tracing::warn!(%ip, error = %e, "cannot serve the task metadata endpoint on the Docker bridge; bridge-mode tasks get none");
                    None
                }
            },
            None => {
                tracing::warn!("the engine has no bridge network: bridge-mode tasks get no task metadata endpoint");
                None
            }
        };
        let now = SavedPorts {
            bridge_port: bridge.map(|a| a.port()),
            loopback_port: loopback.map(|a| a.port()),
        };
        if let Err(e) = std::fs::write(&path, serde_json::to_vec(&now)?) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the metadata endpoint's ports");
        }
        tracing::info!(bridge = ?bridge, loopback = ?loopback, "task metadata endpoint (v4) listening");
        let link_local = bridge
            .filter(|b| !b.ip().is_loopback())
            .and_then(LinkLocalRoute::install);
        Ok(Self {
            credentials_key: credentials_key(&data_dir.join(CREDENTIALS_KEY_FILE))?,
            registry,
            bridge,
            loopback,
            link_local,
            servers,
        })
    }

    /// The endpoint URI for a container in this network mode, if it can reach one.
    pub fn uri(&self, mode: NetworkMode, token: &str) -> Option<String> {
        let addr = match mode {
            NetworkMode::Bridge => self.bridge?,
            NetworkMode::Host => self.loopback?,
            NetworkMode::None | NetworkMode::Awsvpc => return None,
        };
        Some(format!("http://{addr}/v4/{token}"))
    }

    pub fn register(&self, token: &str, view: &SharedView, container: &str) {
        if let Ok(mut entries) = self.registry.entries.write() {
            entries.insert(token.to_string(), (Arc::clone(view), container.to_string()));
        }
    }

    /// Forgets every token of a task, and its credentials.
    pub fn forget_task(&self, view: &SharedView) {
        if let Ok(mut entries) = self.registry.entries.write() {
            entries.retain(|_, (v, _)| !Arc::ptr_eq(v, view));
        }
        if let Ok(mut entries) = self.registry.credentials.write() {
            entries.retain(|_, e| !Arc::ptr_eq(&e.view, view));
        }
    }

    /// The credentials id and authorization token of a task (the same after a restart).
    pub fn task_credentials_ids(&self, task_arn: &str) -> (String, String) {
        let id = hex::encode(
            &hmac_sha256(&self.credentials_key, format!("id\0{task_arn}").as_bytes())[..16],
        );
        let token = hex::encode(hmac_sha256(
            &self.credentials_key,
            format!("token\0{task_arn}").as_bytes(),
        ));
        (id, token)
    }

    /// The credentials URI for a container in this network mode, if it can reach one.
    pub fn credentials_uri(&self, mode: NetworkMode, id: &str) -> Option<String> {
        let addr = match mode {
            NetworkMode::Bridge => match &self.link_local {
                Some(route) => SocketAddr::from((ECS_CREDENTIALS_IP, route.port)),
                None => self.bridge?,
            },
            NetworkMode::Host => self.loopback?,
            NetworkMode::None | NetworkMode::Awsvpc => return None,
        };
        Some(format!("http://{addr}/v2/credentials/{id}"))
    }

    /// Serves `credentials` for the task at its credentials id.
    pub fn register_credentials(
        &self,
        task_arn: &str,
        view: &SharedView,
        credentials: &SharedCredentials,
    ) {
        let (id, token) = self.task_credentials_ids(task_arn);
        if let Ok(mut entries) = self.registry.credentials.write() {
            entries.insert(
                id,
                CredentialsEntry {
                    token,
                    view: Arc::clone(view),
                    credentials: Arc::clone(credentials),
                },
            );
        }
    }
}

/// Reads the credentials key, making it on first use.
fn credentials_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let bytes = hex::decode(text.trim())?;
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
    }
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(hex::encode(key).as_bytes())?;
    Ok(key)
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Byte-wise comparison that takes as long whatever matches.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `GET /v2/credentials/<id>` with the task's token in `Authorization`.
async fn credentials(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let error = |status: StatusCode, code: &str, message: &str| {
        (status, Json(json!({"code": code, "message": message}))).into_response()
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let found = state.registry.credentials.read().ok().and_then(|entries| {
        entries
            .get(&id)
            .filter(|e| same_secret(&e.token, given))
            .map(|e| Arc::clone(&e.credentials))
    });
    let Some(slot) = found else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "No credentials for this id and authorization token",
        );
    };
    let current = slot.read().ok().and_then(|c| c.clone());
    match current {
        Some(c) => Json(json!({
            "RoleArn": c.role_arn,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key,
            "Token": c.token,
            "Expiration": c.expiration,
        }))
        .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "CredentialsUnavailable",
            "The task's role credentials are not available yet",
        ),
    }
}

fn not_found(token: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": format!("No task metadata for {token}")})),
    )
        .into_response()
}

fn lookup(state: &AppState, token: &str) -> Option<(TaskView, String)> {
    let entries = state.registry.entries.read().ok()?;
    let (view, name) = entries.get(token)?;
    let view = view.read().ok()?.clone();
    Some((view, name.clone()))
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn timestamp(t: Timestamp) -> String {
    t.rfc3339()
}

/// One container's v4 document, with what the engine says of it now.
async fn container_doc(state: &AppState, task: &TaskView, c: &ContainerView) -> Value {
    let mut doc = Map::new();
    let found = match &c.docker_id {
        Some(id) => state.runtime.inspect(id).await.ok(),
        None => None,
    };
    if let Some(id) = &c.docker_id {
        doc.insert("DockerId".into(), json!(id));
    }
    doc.insert("Name".into(), json!(c.name));
    doc.insert("DockerName".into(), json!(c.docker_name));
    doc.insert("Image".into(), json!(c.image));
    if let Some(digest) = found.as_ref().and_then(|f| f.image_digest.clone()) {
        doc.insert("ImageID".into(), json!(digest));
    }
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .iter()
            .map(|p| {
                json!({
                    "ContainerPort": p.container_port,
                    "Protocol": p.protocol.as_str(),
                    "HostPort": p.host_port,
                    "HostIp": p.bind_ip,
                })
            })
            .collect();
        doc.insert("Ports".into(), json!(ports));
    }
    doc.insert("Labels".into(), json!(c.labels));
    if let Some(d) = c.desired_status {
        doc.insert("DesiredStatus".into(), json!(d.as_str()));
    }
    if let Some(k) = c.known_status {
        doc.insert("KnownStatus".into(), json!(k.as_str()));
    }
    if let Some(code) = c.exit_code {
        doc.insert("ExitCode".into(), json!(code));
    }
    let mut limits = Map::new();
    limits.insert("CPU".into(), json!(c.cpu));
    if let Some(m) = c.memory {
        limits.insert("Memory".into(), json!(m));
    }
    doc.insert("Limits".into(), Value::Object(limits));
    if let Some(f) = &found {
        if let Some(t) = f.created_at {
            doc.insert("CreatedAt".into(), json!(rfc3339(t)));
        }
        if let Some(t) = f.started_at {
            doc.insert("StartedAt".into(), json!(rfc3339(t)));
        }
        if let Some(t) = f.finished_at {
            doc.insert("FinishedAt".into(), json!(rfc3339(t)));
        }
    }
    doc.insert("Type".into(), json!("NORMAL"));
    if let Some(driver) = &c.log_driver {
        doc.insert("LogDriver".into(), json!(driver));
        doc.insert("LogOptions".into(), json!(c.log_options));
    }
    if let Some(arn) = &c.container_arn {
        doc.insert("ContainerARN".into(), json!(arn));
    }
    if let Some(mode) = task.network_mode.filter(|_| !c.network_disabled) {
        let addresses: Vec<String> = found
            .as_ref()
            .and_then(|f| f.ip_address.clone())
            .into_iter()
            .collect();
        doc.insert(
            "Networks".into(),
            json!([{"NetworkMode": mode.as_str(), "IPv4Addresses": addresses}]),
        );
    }
    if let Some(h) = c.health {
        doc.insert("Health".into(), json!({"status": h.as_str()}));
    }
    if !c.volumes.is_empty() {
        let volumes: Vec<Value> = c
            .volumes
            .iter()
            .map(|(source, dest)| json!({"Source": source, "Destination": dest}))
            .collect();
        doc.insert("Volumes".into(), json!(volumes));
    }
    if let Some(n) = c.restart_count {
        doc.insert("RestartCount".into(), json!(n));
    }
    Value::Object(doc)
}

async fn task_doc(state: &AppState, task: &TaskView) -> Value {
    let mut doc = Map::new();
    doc.insert("Cluster".into(), json!(task.cluster));
    doc.insert("TaskARN".into(), json!(task.task_arn));
    doc.insert("Family".into(), json!(task.family));
    doc.insert("Revision".into(), json!(task.revision.to_string()));
    if let Some(d) = task.desired_status {
        doc.insert("DesiredStatus".into(), json!(d.as_str()));
    }
    if let Some(k) = task.known_status {
        doc.insert("KnownStatus".into(), json!(k.as_str()));
    }
    if task.cpu.is_some() || task.memory.is_some() {
        let mut limits = Map::new();
        if let Some(cpu) = task.cpu {
            // ECS expresses the task's CPU in vCPUs.
            limits.insert("CPU".into(), json!(cpu as f64 / 1024.0));
        }
        if let Some(m) = task.memory {
            limits.insert("Memory".into(), json!(m));
        }
        doc.insert("Limits".into(), Value::Object(limits));
    }
    if let Some(t) = task.pull_started_at {
        doc.insert("PullStartedAt".into(), json!(timestamp(t)));
    }
    if let Some(t) = task.pull_stopped_at {
        doc.insert("PullStoppedAt".into(), json!(timestamp(t)));
    }
    if let Some(t) = task.execution_stopped_at {
        doc.insert("ExecutionStoppedAt".into(), json!(timestamp(t)));
    }
    if let Some(az) = &task.availability_zone {
        doc.insert("AvailabilityZone".into(), json!(az));
    }
    doc.insert("LaunchType".into(), json!("EC2"));
    if let Some(s) = &task.service_name {
        doc.insert("ServiceName".into(), json!(s));
    }
    let mut containers = Vec::new();
    for c in &task.containers {
        containers.push(container_doc(state, task, c).await);
    }
    doc.insert("Containers".into(), Value::Array(containers));
    Value::Object(doc)
}

async fn container(
    State(state): State<Arc<AppState>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    let Some((task, name)) = lookup(&state, &token) else {
        return not_found(&token);
    };
    let Some(c) = task.containers.iter().find(|c| c.name == name) else {
        return not_found(&token);
    };
    Json(container_doc(&state, &task, c).await).into_response()
}

async fn task(State(state): State<Arc<AppState>>, UrlPath(token): UrlPath<String>) -> Response {
    let Some((task, _)) = lookup(&state, &token) else {
        return not_found(&token);
    };
    Json(task_doc(&state, &task).await).into_response()
}

async fn stats_of(state: &AppState, id: &str) -> Value {
    match state.runtime.stats(id).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(container = %id, error = %e, "no stats");
            Value::Null
        }
    }
}

async fn container_stats(
    State(state): State<Arc<AppState>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    let Some((task, name)) = lookup(&state, &token) else {
        return not_found(&token);
    };
    let Some(id) = task
        .containers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.docker_id.clone())
    else {
        return not_found(&token);
    };
    Json(stats_of(&state, &id).await).into_response()
}

async fn task_stats(
    State(state): State<Arc<AppState>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    let Some((task, _)) = lookup(&state, &token) else {
        return not_found(&token);
    };
    let mut out = Map::new();
    for id in task.containers.iter().filter_map(|c| c.docker_id.clone()) {
        let stats = stats_of(&state, &id).await;
        out.insert(id, stats);
    }
    Json(Value::Object(out)).into_response()
}

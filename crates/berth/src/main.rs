//! `berth`: the ECS-compatible orchestrator's one binary. Wiring only.
//!
//! - `berth server`: the control plane (AWS APIs, store, controllers).
//! - `berth agent`: the container agent for one host.
//! - `berth dev`: both in one process with an embedded store, for a laptop or CI.

mod join_token;
mod lock;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_agent::{Agent, AgentConfig};
use berth_api::{AppState, ServerLimits};
use berth_control::services::ServiceSchedulerConfig;
use berth_control::{ControlConfig, ControlPlane};
use berth_controllers::gc::StoppedTaskGc;
use berth_controllers::liveness::Liveness;
use berth_controllers::services::ServiceScheduler;
use berth_controllers::{
    CancellationToken, Controller, ControllerConfig, ControllerManager, LeaderElection,
};
use berth_core::host_access::HostAccess;
use berth_core::SystemClock;
use berth_iam::{AuthMode, Iam, IamConfig, Sealer};
use berth_runtime::DockerRuntime;
use berth_store::{RedbOptions, RedbStore, Store};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Amazon ECS-compatible container orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the AWS APIs, the store and the controllers.
    Server(ServerArgs),
    /// Run the container agent for this host.
    Agent(AgentArgs),
    /// Run a single-node cluster in one process: control plane + agent + embedded store.
    Dev(DevArgs),
    /// Manage cluster join tokens (what an agent needs to register a new instance).
    #[command(subcommand)]
    JoinToken(join_token::JoinTokenCommand),
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Directory for the embedded store.
    #[arg(long, default_value = "berth-data", env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// Region in ARNs.
    #[arg(long, default_value = "us-east-1", env = "BERTH_REGION")]
    region: String,
    /// Account id in ARNs.
    #[arg(long, default_value = "000000000000", env = "BERTH_ACCOUNT")]
    account: String,
    /// Seconds without a poll from an agent before its instance is agentConnected=false.
    #[arg(long, default_value_t = 30)]
    agent_timeout_secs: u64,
    /// Seconds an agent may stay disconnected before its tasks are declared STOPPED.
    #[arg(long, default_value_t = 900)]
    agent_lost_after_secs: u64,
    /// Seconds a STOPPED task stays visible to DescribeTasks/ListTasks.
    #[arg(long, default_value_t = 3600)]
    stopped_task_retention_secs: u64,
    /// Most open client connections (default: three quarters of the open-file limit).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a RUNNING service task without health checks runs before it counts as
    /// healthy in a rollout (ECS: 40).
    #[arg(long, default_value_t = 40)]
    service_task_settle_secs: u64,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS for the API and the agent channel.
#[derive(Args, Clone, Default)]
struct TlsArgs {
    /// PEM certificate chain to serve HTTPS with (with --tls-key).
    #[arg(
        long,
        env = "BERTH_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a CA and server certificate made once in <data-dir>/tls (give
    /// <data-dir>/tls/ca.pem to agents as --ca-cert and to AWS clients as their CA bundle).
    #[arg(long, env = "BERTH_TLS_SELF_SIGNED")]
    tls_self_signed: bool,
}

/// How the AWS APIs authenticate requests.
#[derive(Args, Clone, Default)]
struct AuthArgs {
    /// Throwaway local use only: accept any well-formed SigV4 signature (any key id, the
    /// signature not checked) as the account root. Refused unless --listen is a loopback
    /// address.
    #[arg(long, env = "BERTH_INSECURE_ANY_CREDENTIALS")]
    insecure_any_credentials: bool,
    /// Tests only: STS sessions last at most this many seconds.
    #[arg(long, hide = true)]
    test_max_session_secs: Option<u64>,
}

#[derive(Args, Clone)]
struct AgentArgs {
    /// URL of the berth server.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "BERTH_SERVER")]
    server: String,
    /// Cluster join token (from `berth join-token create`), to register new container
    /// instances; a restart with a saved identity does not need it.
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// PEM file of the CA to trust for an https:// server (e.g. its <data-dir>/tls/ca.pem).
    #[arg(long, env = "BERTH_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Cluster to join (repeatable).
    #[arg(long = "cluster", default_value = "default")]
    clusters: Vec<String>,
    /// Directory for the agent's identity and credentials.
    #[arg(long, default_value = "berth-agent-data", env = "BERTH_AGENT_DATA_DIR")]
    data_dir: PathBuf,
    /// Host IP that published container ports bind to.
    #[arg(long, default_value = "0.0.0.0")]
    host_bind_ip: String,
    /// Memory (MiB) held back from tasks for the host itself.
    #[arg(long, default_value_t = 0)]
    reserved_memory: u64,
    /// Custom instance attribute, name=value (repeatable).
    #[arg(long = "attribute", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// How long a stopped task's containers are kept (for `docker logs`) before they are
    /// removed, e.g. 3h, 10m, 0s (ECS's ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION).
    #[arg(long, default_value = "3h", value_parser = berth_agent::parse_duration, env = "BERTH_TASK_CLEANUP_WAIT")]
    task_cleanup_wait: Duration,
    #[command(flatten)]
    host_access: HostAccessArgs,
}

/// Host-level access this host lets tasks have. All off by default: each one is root on
/// the host for whoever may run tasks here. An opted-in agent advertises the attribute the
/// scheduler requires; the caller also needs `berth:RunPrivilegedTask`.
#[derive(Args, Clone, Default)]
struct HostAccessArgs {
    /// Allow privileged containers (the inverse of the ECS agent's ECS_DISABLE_PRIVILEGED);
    /// advertises com.amazonaws.ecs.capability.privileged-container.
    #[arg(long, env = "BERTH_ALLOW_PRIVILEGED")]
    allow_privileged: bool,
    /// Allow networkMode, pidMode and ipcMode `host`; advertises
    /// berth.capability.host-namespaces.
    #[arg(long, env = "BERTH_ALLOW_HOST_NAMESPACES")]
    allow_host_namespaces: bool,
    /// Allow host volumes of `/` or the Docker socket (or a directory holding it);
    /// advertises berth.capability.host-root-mounts.
    #[arg(long, env = "BERTH_ALLOW_HOST_ROOT_MOUNTS")]
    allow_host_root_mounts: bool,
    /// Allow linuxParameters.capabilities.add; advertises
    /// berth.capability.added-capabilities.
    #[arg(long, env = "BERTH_ALLOW_ADDED_CAPABILITIES")]
    allow_added_capabilities: bool,
}

impl HostAccessArgs {
    fn allowed(&self) -> BTreeSet<HostAccess> {
        [
            (self.allow_privileged, HostAccess::Privileged),
            (self.allow_host_namespaces, HostAccess::HostNamespaces),
            (self.allow_host_root_mounts, HostAccess::HostRootMounts),
            (self.allow_added_capabilities, HostAccess::AddedCapabilities),
        ]
        .into_iter()
        .filter_map(|(on, a)| on.then_some(a))
        .collect()
    }
}

#[derive(Args, Clone)]
struct DevArgs {
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Directory for the store and the agent's state.
    #[arg(long, default_value = ".berth-dev", env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    #[arg(long, default_value = "us-east-1", env = "BERTH_REGION")]
    region: String,
    #[arg(long, default_value = "000000000000", env = "BERTH_ACCOUNT")]
    account: String,
    /// Host IP that published container ports bind to (loopback keeps a laptop private).
    #[arg(long, default_value = "127.0.0.1")]
    host_bind_ip: String,
    /// Seconds a RUNNING service task without health checks runs before it counts as
    /// healthy in a rollout (ECS: 40).
    #[arg(long, default_value_t = 40)]
    service_task_settle_secs: u64,
    #[command(flatten)]
    auth: AuthArgs,
    /// Serve HTTPS with a self-signed CA made once in <data-dir>/server/tls.
    #[arg(long)]
    tls: bool,
    /// How long a stopped task's containers are kept (for `docker logs`) before they are
    /// removed, e.g. 3h, 10m, 0s (ECS's ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION).
    #[arg(long, default_value = "3h", value_parser = berth_agent::parse_duration, env = "BERTH_TASK_CLEANUP_WAIT")]
    task_cleanup_wait: Duration,
    /// Off by default here too: a dev agent runs tasks as root on your laptop or CI host.
    #[command(flatten)]
    host_access: HostAccessArgs,
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

struct RunningServer {
    url: String,
    /// The CA file of a self-signed TLS setup, for the dev agent.
    ca_cert: Option<PathBuf>,
    control: Arc<ControlPlane>,
    iam: Arc<Iam>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    _lock: lock::DataDirLock,
}

async fn start_server(
    args: &ServerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningServer> {
    let lock = lock::DataDirLock::acquire(&args.data_dir)?;
    let insecure = args.auth.insecure_any_credentials;
    if insecure && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-any-credentials accepts any signature: it is refused with a \
             non-loopback --listen ({}); use the admin credentials instead",
            args.listen
        );
    }
    berth_api::raise_open_file_limit();
    let store_path = args.data_dir.join("state.redb");
    let store: Arc<dyn Store> = {
        let path = store_path.clone();
        tokio::task::spawn_blocking(move || RedbStore::open(&path, RedbOptions::default()))
            .await?
            .with_context(|| format!("opening store {}", store_path.display()))?
    };
    let retention = Duration::from_secs(args.stopped_task_retention_secs);
    let control = ControlPlane::new(
        Arc::clone(&store),
        ControlConfig {
            region: args.region.clone(),
            account: args.account.clone(),
            agent_timeout: Duration::from_secs(args.agent_timeout_secs.max(3)),
            agent_lost_after: Duration::from_secs(args.agent_lost_after_secs),
            stopped_task_retention: retention,
            ..ControlConfig::default()
        },
    );
    let control_plane_id = control.identity().await?;

    // Identity and access: the master key (mode 0600) seals every secret in the store.
    let sealer = Arc::new(
        Sealer::open_or_create(&args.data_dir.join(berth_iam::MASTER_KEY_FILE))
            .context("opening the master key")?,
    );
    let mut iam_config = IamConfig::new(&args.account, &args.region);
    if insecure {
        iam_config.mode = AuthMode::InsecureAnyCredentials;
        tracing::warn!(
            "--insecure-any-credentials: any well-formed signature is accepted as the account \
             root; nothing is authenticated. For throwaway local use only."
        );
    }
    iam_config.max_session_lifetime = args.auth.test_max_session_secs.map(Duration::from_secs);
    let iam = Iam::open(
        Arc::clone(&store),
        sealer,
        Arc::new(SystemClock),
        iam_config,
    )
    .await
    .map_err(|e| anyhow::anyhow!("opening the identity store: {e}"))?;
    if let Some(admin) = iam
        .bootstrap(&args.data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("creating the admin access key: {e}"))?
    {
        // Shown once: the secret is also in the file (mode 0600), nowhere else in clear.
        println!(
            "berth: created the admin access key of arn:aws:iam::{}:root (saved to {}, mode 0600):",
            args.account,
            admin.file.display()
        );
        println!("berth:   AWS_ACCESS_KEY_ID={}", admin.access_key_id);
        println!("berth:   AWS_SECRET_ACCESS_KEY={}", admin.secret_access_key);
    }
    control
        .services
        .set_scheduler_config(ServiceSchedulerConfig {
            unchecked_task_settle: Duration::from_secs(args.service_task_settle_secs),
            ..Default::default()
        });

    // Background jobs run on the leader only (one server here; the lease makes it safe to
    // run several against one store).
    let election = LeaderElection::new(
        Arc::clone(&store),
        "leader/controllers",
        format!("{}-{}", std::process::id(), uuid_like()),
        Duration::from_secs(10),
    );
    let manager = ControllerManager::new(election)
        .with(Controller::new(
            Liveness::new(Arc::clone(&control)),
            Arc::clone(&store),
            ControllerConfig::default(),
        ))
        .with(Controller::new(
            ServiceScheduler::new(Arc::clone(&control)),
            Arc::clone(&store),
            ControllerConfig::default(),
        ))
        .with(Controller::new(
            StoppedTaskGc::new(Arc::clone(&control), retention),
            Arc::clone(&store),
            ControllerConfig::default(),
        ));
    tokio::spawn(manager.run(shutdown.clone()));

    let tls = if args.tls.tls_self_signed {
        let mut hosts = vec![];
        if !args.listen.ip().is_unspecified() {
            hosts.push(args.listen.ip().to_string());
        }
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            hosts.push(name.trim().to_string());
        }
        Some(berth_api::tls::self_signed(&args.data_dir, &hosts)?)
    } else {
        match (&args.tls.tls_cert, &args.tls.tls_key) {
            (Some(cert), Some(key)) => Some(berth_api::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: None,
            }),
            _ => None,
        }
    };
    let acceptor = tls.as_ref().map(berth_api::tls::acceptor).transpose()?;
    if tls.is_none() && !args.listen.ip().is_loopback() {
        // Requests stay authenticated (SigV4, agent credentials), but travel in clear.
        tracing::warn!(listen = %args.listen,
            "serving plain HTTP on a non-loopback address: join tokens, agent credentials and \
             secret values cross the network unencrypted; use --tls-cert/--tls-key or --tls-self-signed");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // A certificate names hosts, not 0.0.0.0: hand out an address it covers.
    let url = if tls.is_some() && addr.ip().is_unspecified() {
        format!("https://127.0.0.1:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    let ca_cert = tls.as_ref().and_then(|t| t.ca.clone());
    if let Some(ca) = &ca_cert {
        println!("berth: TLS CA certificate: {}", ca.display());
    }
    // Tests and scripts read this line to learn the port when --listen uses port 0.
    println!("berth: listening on {url}");
    let mut limits = ServerLimits::default();
    if let Some(max) = args.max_connections {
        limits.max_connections = max;
    }
    let state = Arc::new(AppState {
        control: Arc::clone(&control),
        control_plane_id,
        limits: limits.clone(),
        iam: Arc::clone(&iam),
        tls: acceptor.is_some(),
    });
    let handle = tokio::spawn(berth_api::serve_with_tls(
        listener,
        berth_api::router(state),
        limits,
        acceptor,
        async move { shutdown.cancelled().await },
    ));
    Ok(RunningServer {
        url,
        ca_cert,
        control,
        iam,
        handle,
        _lock: lock,
    })
}

/// `berth dev` shows how to point the AWS CLI at it.
fn print_dev_credentials(args: &ServerArgs, iam: &Iam) {
    if args.auth.insecure_any_credentials {
        println!(
            "berth dev: --insecure-any-credentials: any key is accepted as the account root, e.g."
        );
        println!(
            "export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION={}",
            iam.config.region
        );
        return;
    }
    let file = args.data_dir.join(berth_iam::CREDENTIALS_FILE);
    match berth_iam::read_credentials_file(&file) {
        Some(c) => {
            println!(
                "berth dev: the account root's admin key (from {}):",
                file.display()
            );
            println!(
                "export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}",
                c.access_key_id, c.secret_access_key, iam.config.region
            );
        }
        None => println!(
            "berth dev: {} is gone; use the keys you made with IAM (the admin key is shown once)",
            file.display()
        ),
    }
}

const DEV_TOKEN_DESCRIPTION: &str = "berth dev's own agent";

/// `berth dev`'s agent joins every cluster with a token berth mints for it at each start
/// (the last start's is revoked: only the running process knows its secret).
async fn dev_join_token(control: &ControlPlane) -> anyhow::Result<String> {
    use berth_control::join_tokens::{JoinScope, JoinTokenStatus, MAX_LIFETIME};
    let now = control.ctx.now();
    for old in control.join_tokens.list(None).await? {
        if old.scope == JoinScope::AllClusters
            && old.created_by.is_none()
            && old.description.as_deref() == Some(DEV_TOKEN_DESCRIPTION)
            && old.status(now) == JoinTokenStatus::Active
        {
            control.join_tokens.revoke(&old.id).await?;
        }
    }
    let token = control
        .join_tokens
        .mint(JoinScope::AllClusters, MAX_LIFETIME, DEV_TOKEN_DESCRIPTION)
        .await?;
    Ok(token.expose().to_string())
}

/// A short random suffix for this process's leader identity.
fn uuid_like() -> String {
    use berth_core::IdGen;
    berth_core::RandomIds.next_id()[..8].to_string()
}

async fn run_agent(config: AgentConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let runtime = DockerRuntime::connect()
        .await
        .context("connecting to the Docker Engine")?;
    let agent = Agent::new(config, Arc::new(runtime), Arc::new(SystemClock)).await?;
    agent.run(shutdown).await
}

fn init_tracing() {
    use std::io::IsTerminal;
    let directives = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    // bollard's debug output dumps container configurations, environment included, which
    // holds the tasks' secrets: it stays at info unless named on purpose.
    let directives = if directives.contains("bollard") {
        directives
    } else {
        format!("{directives},bollard=info")
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&directives)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,bollard=info")),
        )
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let cancel = CancellationToken::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            termination().await;
            tracing::info!("shutting down");
            cancel.cancel();
            let _ = shutdown_tx.send(true);
        });
    }
    match cli.command {
        Command::Server(args) => {
            let server = start_server(&args, cancel).await?;
            server.handle.await??;
        }
        Command::Agent(args) => {
            let mut config = AgentConfig::new(args.server, args.data_dir);
            config.clusters = args.clusters;
            config.host_bind_ip = args.host_bind_ip;
            config.reserved_memory_mib = args.reserved_memory;
            config.attributes = args.attributes;
            config.task_cleanup_wait = args.task_cleanup_wait;
            config.host_access = args.host_access.allowed();
            config.join_token = args.join_token;
            config.ca_cert = args.ca_cert;
            run_agent(config, shutdown_rx).await?;
        }
        Command::JoinToken(command) => join_token::run(command).await?,
        Command::Dev(args) => {
            // One `berth dev` per data directory, checked before anything is created in it.
            let _dev_lock = lock::DataDirLock::acquire(&args.data_dir)?;
            let server_args = ServerArgs {
                listen: args.listen,
                data_dir: args.data_dir.join("server"),
                region: args.region,
                account: args.account,
                agent_timeout_secs: 30,
                agent_lost_after_secs: 900,
                stopped_task_retention_secs: 3600,
                max_connections: None,
                service_task_settle_secs: args.service_task_settle_secs,
                auth: args.auth.clone(),
                tls: TlsArgs {
                    tls_self_signed: args.tls,
                    ..Default::default()
                },
            };
            let server = start_server(&server_args, cancel).await?;
            // A fresh dev cluster has a "default" cluster, like a new ECS account's console.
            server
                .control
                .clusters
                .create(Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("creating the default cluster: {e}"))?;
            let mut config = AgentConfig::new(server.url.clone(), args.data_dir.join("agent"));
            config.follow_all_clusters = true;
            config.join_token = Some(dev_join_token(&server.control).await?);
            config.ca_cert = server.ca_cert.clone();
            config.host_bind_ip = args.host_bind_ip;
            config.task_cleanup_wait = args.task_cleanup_wait;
            config.host_access = args.host_access.allowed();
            print_dev_credentials(&server_args, &server.iam);
            println!(
                "berth dev: ready. Try: aws --endpoint-url {} ecs list-clusters",
                server.url
            );
            let agent = tokio::spawn(run_agent(config, shutdown_rx));
            // One process, one fate: if either half ends, so does `berth dev`.
            tokio::select! {
                result = server.handle => result??,
                result = agent => result?.context("the dev agent stopped")?,
            }
        }
    }
    Ok(())
}

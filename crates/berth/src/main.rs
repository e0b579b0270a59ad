//! `berth`: the ECS-compatible orchestrator's one binary.
//!
//! - `berth server`: the control plane (ECS API, store, scheduler).
//! - `berth agent`: the container agent for one host.
//! - `berth dev`: both in one process with an embedded store, for a laptop or CI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_agent::{Agent, AgentConfig};
use berth_control::{ControlConfig, ControlPlane};
use berth_runtime::DockerRuntime;
use berth_store::RedbStore;
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
    /// Run the control plane: the ECS API, the store and the scheduler.
    Server(ServerArgs),
    /// Run the container agent for this host.
    Agent(AgentArgs),
    /// Run a single-node cluster in one process: control plane + agent + embedded store.
    Dev(DevArgs),
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
    /// Seconds without word from an agent before its instance is agentConnected=false.
    #[arg(long, default_value_t = 30)]
    agent_timeout_secs: u64,
    /// Seconds a STOPPED task stays visible to DescribeTasks/ListTasks.
    #[arg(long, default_value_t = 3600)]
    stopped_task_retention_secs: u64,
}

#[derive(Args, Clone)]
struct AgentArgs {
    /// URL of the berth server.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "BERTH_SERVER")]
    server: String,
    /// Cluster to join (repeatable).
    #[arg(long = "cluster", default_value = "default")]
    clusters: Vec<String>,
    /// Directory for the agent's identity and state.
    #[arg(long, default_value = "berth-agent-data", env = "BERTH_AGENT_DATA_DIR")]
    data_dir: PathBuf,
    /// Host IP that published container ports bind to.
    #[arg(long, default_value = "0.0.0.0")]
    host_bind_ip: String,
    /// Memory (MiB) held back from tasks for the host itself.
    #[arg(long, default_value_t = 0)]
    reserved_memory: i64,
    /// Custom instance attribute, name=value (repeatable).
    #[arg(long = "attribute", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
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
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

struct RunningServer {
    url: String,
    control: Arc<ControlPlane>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_server(
    args: &ServerArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<RunningServer> {
    let store_path = args.data_dir.join("state.redb");
    let store = RedbStore::open(&store_path)
        .with_context(|| format!("opening store {}", store_path.display()))?;
    let control = ControlPlane::new(
        Arc::new(store),
        ControlConfig {
            region: args.region.clone(),
            account: args.account.clone(),
            agent_timeout: Duration::from_secs(args.agent_timeout_secs.max(3)),
            ..ControlConfig::default()
        },
    );
    control.spawn_background();
    let retention = Duration::from_secs(args.stopped_task_retention_secs);
    let janitor = Arc::clone(&control);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let c = Arc::clone(&janitor);
            match tokio::task::spawn_blocking(move || c.forget_stopped_tasks(retention)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "forgot old STOPPED tasks"),
                Ok(Err(e)) => tracing::warn!(error = %e, "forgetting STOPPED tasks failed"),
                _ => {}
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    // Tests and scripts read this line to learn the port when --listen uses port 0.
    println!("berth: listening on {url}");
    let mut stop = shutdown;
    let handle = tokio::spawn(berth_api::serve(
        listener,
        Arc::clone(&control),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    Ok(RunningServer {
        url,
        control,
        handle,
    })
}

async fn run_agent(config: AgentConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let runtime = DockerRuntime::connect()
        .await
        .context("connecting to the Docker Engine")?;
    let agent = Agent::new(config, Arc::new(runtime)).await?;
    tracing::info!(agent_id = agent.agent_id(), "agent starting");
    agent.run(shutdown).await
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    match cli.command {
        Command::Server(args) => {
            let server = start_server(&args, shutdown_rx).await?;
            server.handle.await??;
        }
        Command::Agent(args) => {
            let mut config = AgentConfig::new(args.server, args.data_dir);
            config.clusters = args.clusters;
            config.host_bind_ip = args.host_bind_ip;
            config.reserved_memory_mib = args.reserved_memory;
            config.attributes = args.attributes;
            run_agent(config, shutdown_rx).await?;
        }
        Command::Dev(args) => {
            let server_args = ServerArgs {
                listen: args.listen,
                data_dir: args.data_dir.join("server"),
                region: args.region,
                account: args.account,
                agent_timeout_secs: 30,
                stopped_task_retention_secs: 3600,
            };
            let server = start_server(&server_args, shutdown_rx.clone()).await?;
            // A fresh dev cluster has a "default" cluster, like a new ECS account's console.
            let control = Arc::clone(&server.control);
            tokio::task::spawn_blocking(move || control.create_cluster(Default::default()))
                .await?
                .map_err(|e| anyhow::anyhow!("creating the default cluster: {e}"))?;
            let mut config = AgentConfig::new(server.url.clone(), args.data_dir.join("agent"));
            config.follow_all_clusters = true;
            config.host_bind_ip = args.host_bind_ip;
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

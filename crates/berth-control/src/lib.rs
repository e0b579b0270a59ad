//! berth's control plane: the ECS actions over the store, task placement through the
//! scheduler, and the agent-facing side (assignment long-poll, state reports, heartbeats).

mod agents;
mod clusters;
mod instances;
mod keys;
mod paging;
mod tags;
mod task_definitions;
mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::{ApiError, Arn, ArnBuilder, ResourceKind};
use berth_store::{Store, StoreError};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use tasks::Reservation;

pub use berth_model::AUTO_REGISTERED_ATTRIBUTE;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub region: String,
    pub account: String,
    /// An instance whose agent has not been heard from for this long is `agentConnected: false`.
    pub agent_timeout: Duration,
    /// Longest an agent's assignment poll is held open.
    pub max_poll_wait: Duration,
    /// Seed for placement randomness; `None` seeds from the OS.
    pub rng_seed: Option<u64>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account: "000000000000".into(),
            agent_timeout: Duration::from_secs(30),
            max_poll_wait: Duration::from_secs(20),
            rng_seed: None,
        }
    }
}

/// The control plane. Cheap to share behind an `Arc`.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    arns: ArnBuilder,
    config: ControlConfig,
    rng: Mutex<StdRng>,
    /// Instance ARN → when its agent last spoke to us. In memory: after a restart every
    /// instance gets a full timeout to reconnect.
    last_seen: Mutex<HashMap<String, Instant>>,
    started: Instant,
}

impl ControlPlane {
    pub fn new(store: Arc<dyn Store>, config: ControlConfig) -> Arc<Self> {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Arc::new(Self {
            store,
            arns: ArnBuilder::new(&config.region, &config.account),
            config,
            rng: Mutex::new(rng),
            last_seen: Mutex::new(HashMap::new()),
            started: Instant::now(),
        })
    }

    pub fn arns(&self) -> &ArnBuilder {
        &self.arns
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Starts the background loop that marks silent agents disconnected.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.config.agent_timeout / 3);
            loop {
                tick.tick().await;
                let sweep = Arc::clone(&this);
                // Store I/O is synchronous: keep it off the reactor.
                match tokio::task::spawn_blocking(move || sweep.refresh_agent_connectivity()).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "agent connectivity sweep failed"),
                    Err(e) => tracing::warn!(error = %e, "agent connectivity sweep panicked"),
                }
            }
        })
    }
}

/// Store failures become ServerException: the caller did nothing wrong.
impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(key) => ControlError::Conflict(key),
            other => ControlError::Api(ApiError::server(other.to_string())),
        }
    }
}

/// Internal error: an API error, or an optimistic-concurrency conflict worth retrying.
#[derive(Debug)]
pub(crate) enum ControlError {
    Api(ApiError),
    Conflict(String),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Api(e) => e,
            ControlError::Conflict(key) => ApiError::server(format!("conflicting update of {key}")),
        }
    }
}

impl From<ApiError> for ControlError {
    fn from(e: ApiError) -> Self {
        ControlError::Api(e)
    }
}

pub(crate) type CResult<T> = Result<T, ControlError>;

/// Runs `attempt` until it does not conflict (bounded), turning the result into an API result.
pub(crate) fn with_retries<T>(mut attempt: impl FnMut() -> CResult<T>) -> Result<T, ApiError> {
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(ControlError::Api(e)) => return Err(e),
            Err(ControlError::Conflict(key)) => {
                tracing::debug!(%key, "store conflict, retrying");
            }
        }
    }
    Err(ApiError::server(
        "too much concurrent modification; try again",
    ))
}

/// Splits a cluster given by name or ARN into its name.
pub(crate) fn cluster_name(given: Option<&str>) -> Result<String, ApiError> {
    let given = given
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if given.starts_with("arn:") {
        let arn = Arn::parse(given)?;
        if arn.kind != ResourceKind::Cluster {
            return Err(ApiError::invalid(format!("{given} is not a cluster ARN.")));
        }
        return Ok(arn.resource);
    }
    Ok(given.to_string())
}

/// Splits a cluster-scoped resource given by ARN (`.../<kind>/<cluster>/<id>`) or bare id
/// into its id, refusing ARNs of another kind or cluster.
pub(crate) fn id_in_cluster(
    cluster: &str,
    given: &str,
    kind: ResourceKind,
    what: &str,
) -> Result<String, ApiError> {
    if !given.starts_with("arn:") {
        return Ok(given.to_string());
    }
    let arn = Arn::parse(given)?;
    let same_cluster = arn
        .resource
        .split_once('/')
        .is_some_and(|(c, _)| c == cluster);
    if arn.kind != kind || !same_cluster {
        return Err(ApiError::invalid(format!(
            "{given} is not a {what} of cluster {cluster}."
        )));
    }
    Ok(arn.last_segment().to_string())
}

/// Whether a Describe call's `include` asks for tags.
pub(crate) fn includes_tags(include: &Option<Vec<String>>) -> bool {
    include
        .as_ref()
        .is_some_and(|fields| fields.iter().any(|f| f == "TAGS"))
}

//! berth's control plane: one module per ECS resource, each owning its records, keys,
//! validation and store access, and one shared launch path (place → commit the plan with a
//! version check → retry on conflict) that RunTask, StartTask and controllers all use.
//!
//! Operations take typed inputs (parsed at the API edge) and return typed records.

pub mod account_settings;
pub mod agents;
pub mod clusters;
pub mod instances;
pub mod join_tokens;
pub mod keys;
pub mod launch;
mod paging;
pub mod rollout;
pub mod services;
pub mod tags;
pub mod task_definitions;
pub mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::arn::{is_arn, Arn, ResourceKind};
use berth_core::ids::ClusterName;
use berth_core::{ArnBuilder, Clock, Error, IdGen, RandomIds, SystemClock};
use berth_store::{ReadExt, Store, StoreError};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use paging::{Page, PageRequest};

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub region: String,
    pub account: String,
    /// An agent whose session lease is not renewed for this long is `agentConnected: false`.
    pub agent_timeout: Duration,
    /// Tasks on an instance whose agent has been disconnected this long are declared
    /// STOPPED (the agent is not coming back; services replace them elsewhere).
    pub agent_lost_after: Duration,
    /// Longest an agent's assignment poll is held open.
    pub max_poll_wait: Duration,
    /// STOPPED tasks stay visible this long, as in ECS.
    pub stopped_task_retention: Duration,
    /// Seed for placement randomness; `None` seeds from the OS.
    pub rng_seed: Option<u64>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account: "000000000000".into(),
            agent_timeout: Duration::from_secs(30),
            agent_lost_after: Duration::from_secs(15 * 60),
            max_poll_wait: Duration::from_secs(20),
            stopped_task_retention: Duration::from_secs(3600),
            rng_seed: None,
        }
    }
}

/// What every resource module shares.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub arns: ArnBuilder,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGen>,
    pub config: ControlConfig,
    pub(crate) rng: Mutex<StdRng>,
    /// One placement at a time per cluster in this process; the store's placement token
    /// still guards against other servers.
    placement_locks: Mutex<HashMap<ClusterName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ctx {
    pub(crate) fn placement_lock(&self, cluster: &ClusterName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.placement_locks.lock().expect("placement locks");
        Arc::clone(locks.entry(cluster.clone()).or_default())
    }
    pub fn now(&self) -> berth_core::Timestamp {
        self.clock.now()
    }
}

/// The control plane: one handle per resource over a shared context.
pub struct ControlPlane {
    pub ctx: Arc<Ctx>,
    pub clusters: clusters::Clusters,
    pub task_definitions: task_definitions::TaskDefinitions,
    pub instances: instances::Instances,
    pub tasks: tasks::Tasks,
    pub launcher: launch::Launcher,
    pub agents: agents::Agents,
    pub join_tokens: join_tokens::JoinTokens,
    pub services: services::Services,
    pub account_settings: account_settings::AccountSettings,
    pub tags: tags::Tags,
}

impl ControlPlane {
    pub fn new(store: Arc<dyn Store>, config: ControlConfig) -> Arc<Self> {
        Self::with_clock_and_ids(store, config, Arc::new(SystemClock), Arc::new(RandomIds))
    }

    pub fn with_clock_and_ids(
        store: Arc<dyn Store>,
        config: ControlConfig,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
    ) -> Arc<Self> {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let ctx = Arc::new(Ctx {
            store,
            arns: ArnBuilder::new(&config.region, &config.account),
            clock,
            ids,
            config,
            rng: Mutex::new(rng),
            placement_locks: Mutex::new(HashMap::new()),
        });
        Arc::new(Self {
            clusters: clusters::Clusters::new(Arc::clone(&ctx)),
            task_definitions: task_definitions::TaskDefinitions::new(Arc::clone(&ctx)),
            instances: instances::Instances::new(Arc::clone(&ctx)),
            tasks: tasks::Tasks::new(Arc::clone(&ctx)),
            launcher: launch::Launcher::new(Arc::clone(&ctx)),
            agents: agents::Agents::new(Arc::clone(&ctx)),
            join_tokens: join_tokens::JoinTokens::new(Arc::clone(&ctx)),
            services: services::Services::new(Arc::clone(&ctx)),
            account_settings: account_settings::AccountSettings::new(Arc::clone(&ctx)),
            tags: tags::Tags::new(Arc::clone(&ctx)),
            ctx,
        })
    }

    pub fn arns(&self) -> &ArnBuilder {
        &self.ctx.arns
    }

    /// This control plane's identity, made on first start and kept in the store. Agents
    /// label their containers with it so that they never touch another control plane's.
    pub async fn identity(&self) -> Result<String, Error> {
        let key = keys::meta("control-plane-id");
        with_retries(|| async {
            let store = &self.ctx.store;
            if let Some((id, _)) = store.get_json::<String>(&key).await? {
                return Ok(id);
            }
            let id = self.ctx.ids.next_id();
            store
                .commit(
                    berth_store::Txn::new()
                        .require_absent(&key)
                        .put_json(&key, &id),
                )
                .await?;
            Ok(id)
        })
        .await
    }
}

/// Internal error: one for the caller, or an optimistic-concurrency conflict to retry.
#[derive(Debug)]
pub(crate) enum ControlError {
    Api(Error),
    Conflict(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { key } => ControlError::Conflict(key),
            other => ControlError::Api(store_failure(other)),
        }
    }
}

impl From<Error> for ControlError {
    fn from(e: Error) -> Self {
        ControlError::Api(e)
    }
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Api(e) => e,
            ControlError::Conflict(key) => Error::server(format!("conflicting update of {key}")),
        }
    }
}

/// A store failure reaching a caller is the server's fault, not the request's.
pub(crate) fn store_failure(e: StoreError) -> Error {
    Error::server(e.to_string())
}

pub(crate) type CResult<T> = Result<T, ControlError>;

/// Runs `attempt` until it does not conflict (bounded), turning the result into an API result.
pub(crate) async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CResult<T>>,
{
    const ATTEMPTS: u32 = 32;
    for n in 0..ATTEMPTS {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(ControlError::Api(e)) => return Err(e),
            Err(ControlError::Conflict(key)) => {
                tracing::debug!(%key, attempt = n, "store conflict, retrying");
                // Back off a little so concurrent writers interleave instead of colliding again.
                if n > 2 {
                    tokio::time::sleep(Duration::from_millis(u64::from(n.min(10)) * 2)).await;
                }
            }
        }
    }
    Err(Error::server("too much concurrent modification; try again"))
}

/// Resolves a cluster given by name or ARN (absent or empty: `default`).
pub fn cluster_name(given: Option<&str>) -> Result<ClusterName, Error> {
    let given = given
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if is_arn(given) {
        let arn = Arn::parse(given)?;
        if arn.kind != ResourceKind::Cluster {
            return Err(Error::invalid(format!("{given} is not a cluster ARN.")));
        }
        return ClusterName::new(arn.resource);
    }
    ClusterName::new(given)
}

/// Splits a cluster-scoped resource given by ARN (`…/<kind>/<cluster>/<id>`) or bare id into
/// its id, refusing ARNs of another kind or another cluster.
pub(crate) fn id_in_cluster(
    cluster: &ClusterName,
    given: &str,
    kind: ResourceKind,
    what: &str,
) -> Result<String, Error> {
    if !is_arn(given) {
        return Ok(given.to_string());
    }
    let arn = Arn::parse(given)?;
    match (arn.kind == kind, arn.segments().as_slice()) {
        (true, [c, id]) if *c == cluster.as_str() => Ok((*id).to_string()),
        _ => Err(Error::invalid(format!(
            "{given} is not a {what} of cluster {cluster}."
        ))),
    }
}

/// Removes repeated identifiers, keeping the first of each (Describe* calls).
pub fn dedup<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

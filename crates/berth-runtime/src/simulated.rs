//! An in-memory container engine that behaves, from the caller's point of view, like the
//! Docker driver: for unit tests of the agent without Docker, and for scale tests with
//! thousands of simulated agents in one process.
//!
//! Nothing runs: a container is a record, and time is tokio time. Every delay (start
//! latency, a container exiting by itself, a stop timeout, a health check settling) is
//! measured with [`tokio::time::Instant`] and awaited with tokio sleeps, so tests run under
//! `#[tokio::test(start_paused = true)]` in no real time and deterministically. There are no
//! threads and no background tasks: a container's own exit is applied when it is due, before
//! any call observes the engine, and `wait_exit`/`stop` sleep until the next due exit.
//!
//! # Images
//!
//! An image is *known* if it was registered ([`SimulatedRuntimeBuilder::image`],
//! [`SimulatedRuntime::set_behavior`]), if its repository is `sim/...`, or if the builder
//! accepts any image ([`SimulatedRuntimeBuilder::accept_any_image`]). Known images are in the
//! "registry": [`ContainerRuntime::ensure_image`] pulls them (unless
//! [`ImageBehavior::fail_pull`]); images registered with
//! [`SimulatedRuntimeBuilder::local_image`] are present from the start. Like Docker,
//! `create` needs the image present locally (`RuntimeError::Image` otherwise), and an unknown
//! image cannot be pulled (`RuntimeError::Image`). Names are normalised as Docker does:
//! `nginx`, `nginx:latest` and `docker.io/library/nginx:latest` are one image.
//!
//! # How a container behaves
//!
//! The behaviour of a container is fixed at `create`, from, in order:
//! 1. its image's [`ImageBehavior`]: the registered one; for `sim/exit:N`, "exits at once with
//!    code N"; for other `sim/...` images and accepted unknown images, the default behaviour
//!    ([`SimulatedRuntimeBuilder::default_behavior`], itself by default "runs until stopped");
//! 2. overridden by its command line (entrypoint followed by command) if that is one of these
//!    simulator commands (anything else leaves the image's behaviour alone):
//!
//! | argv                          | behaviour                                              |
//! |-------------------------------|--------------------------------------------------------|
//! | `run`                         | runs until stopped                                     |
//! | `exit N`                      | exits at once with code N                              |
//! | `sleep S`                     | runs S, then exits 0 (`sleep infinity`: until stopped) |
//! | `exit-after S N`              | runs S, then exits with code N                         |
//! | `check-env NAME=VALUE`        | exits at once: 0 if its env has NAME=VALUE, else 1     |
//! | `ignore-sigterm [argv...]`    | ignores SIGTERM (so `stop` kills it after its timeout), then the rest of argv as above |
//!
//! Durations `S` are seconds (`0.2`) or a number with a unit `ms`, `s`, `m`, `h`, `d`. A
//! simulator command with bad arguments fails `create` with `RuntimeError::InvalidSpec`.
//!
//! # Semantics (as Docker's)
//!
//! - `create` rejects a name in use (`RuntimeError::Engine`, Docker's 409) and invalid names;
//!   checks memory settings as Docker does; a blank name gets a generated one.
//! - `start` sleeps [`ImageBehavior::start_delay`], then binds ports and runs the container. On
//!   a running container it does nothing; on an exited one it runs it again. Port bindings are
//!   published unless the network mode is host/none/container:*: dynamic host ports are
//!   allocated per protocol from 32768 upwards (wrapping at 60999), a static host port already
//!   bound by a running container fails the start (`RuntimeError::Engine`, the container stays
//!   as it was, with the error reported by `inspect`).
//! - `stop(timeout)` sends SIGTERM: by default the container exits at once with 143; per
//!   [`OnSigterm`] it may take a while or ignore the signal, and is killed (137) once `timeout`
//!   has elapsed. Stopping a container that is not running does nothing.
//! - `remove` kills a running container and forgets it: `inspect`, `start`, `stop` and
//!   `wait_exit` then fail with `RuntimeError::NotFound`; removing it again succeeds.
//! - `inspect` reports ports only while running; health only if the spec has a health check
//!   (not `NONE`) and the container has started: `Starting`, then per the [`HealthScript`];
//!   `Unhealthy` once it has exited.
//! - `wait_exit` resolves when the container is not running (at once if it never started).
//! - Containers can be named by id, name or unique id prefix.
//!
//! # Test hooks
//!
//! [`SimulatedRuntime::kill`] (a crash or `docker kill` from outside),
//! [`SimulatedRuntime::oom_kill`], [`SimulatedRuntime::containers`] (everything, with specs and
//! how many times each was started), [`SimulatedRuntime::set_behavior`] and
//! [`SimulatedRuntime::counters`] (calls per operation).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use berth_runtime::{
//!     ContainerRuntime, ContainerSpec, ImageBehavior, RunState, SimulatedRuntime,
//! };
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> berth_runtime::Result<()> {
//! let rt = SimulatedRuntime::builder()
//!     .cpus(8)
//!     .image("app:1", ImageBehavior::default().with_start_delay(Duration::from_secs(2)))
//!     .build();
//! rt.ensure_image("app:1").await?;
//! let id = rt
//!     .create(&ContainerSpec {
//!         name: "web".into(),
//!         image: "app:1".into(),
//!         // Overrides the image's "runs until stopped".
//!         command: Some(vec!["exit-after".into(), "0.5".into(), "3".into()]),
//!         ..ContainerSpec::default()
//!     })
//!     .await?;
//! rt.start(&id).await?; // 2s of tokio time
//! rt.wait_exit(&id).await?; // 0.5s more
//! let status = rt.inspect(&id).await?;
//! assert_eq!((status.state, status.exit_code), (RunState::Exited, Some(3)));
//! assert_eq!(rt.counters().starts, 1);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    mib_to_bytes, publishes_ports, BoundPort, ContainerRuntime, ContainerSpec, ContainerStatus,
    GroupLimits, Health, HealthCheckSpec, HostInfo, MountSource, PortProtocol, Result, RunState,
    RuntimeError, VolumeInfo, VolumeSpec,
};

/// The image [`ContainerRuntime::ensure_pause_image`] answers with.
pub const SIM_PAUSE_IMAGE: &str = "sim/pause:latest";

/// Exit code of a container that exits on SIGTERM's default action (128 + 15).
pub const SIGTERM_EXIT_CODE: i64 = 143;
/// Exit code of a container killed with SIGKILL (128 + 9), also after an OOM kill.
pub const SIGKILL_EXIT_CODE: i64 = 137;

const DYNAMIC_PORT_FIRST: u16 = 32768;
const DYNAMIC_PORT_LAST: u16 = 60999;
/// Docker's health check defaults for a zero interval / zero retries.
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_RETRIES: u32 = 3;
/// "Forever" for deadlines that would overflow `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How a container's health check turns out (only for containers whose spec has one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HealthScript {
    /// Every probe passes: `Healthy` at the first probe, one `interval` after start.
    #[default]
    Passing,
    /// Every probe fails: `Unhealthy` after `retries` probes that count (Docker does not
    /// count failures within `start_period`).
    Failing,
    /// `Healthy` this long after start, whatever the spec's timing.
    HealthyAfter(Duration),
    /// `Unhealthy` this long after start, whatever the spec's timing.
    UnhealthyAfter(Duration),
    /// No probe ever finishes: `Starting` for as long as it runs.
    NeverReports,
    /// `Starting`, then from each offset after start the given health, e.g. healthy after 1s
    /// and unhealthy after 60s. Offsets in increasing order.
    Timeline(Vec<(Duration, Health)>),
}

impl HealthScript {
    fn health_after(&self, elapsed: Duration, check: &HealthCheckSpec) -> Health {
        let interval = if check.interval.is_zero() {
            DEFAULT_HEALTH_INTERVAL
        } else {
            check.interval
        };
        let reached = |at: Duration| elapsed >= at;
        match self {
            Self::Passing if reached(interval) => Health::Healthy,
            Self::Failing => {
                let retries = if check.retries == 0 {
                    DEFAULT_HEALTH_RETRIES
                } else {
                    check.retries
                };
                // Probe k runs at k * interval; the first that counts is past start_period.
                let first_counted = check.start_period.as_nanos() / interval.as_nanos() + 1;
                let probe = first_counted + u128::from(retries) - 1;
                let at = interval.as_nanos().saturating_mul(probe);
                let at = Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX));
                if reached(at) {
                    Health::Unhealthy
                } else {
                    Health::Starting
                }
            }
            Self::HealthyAfter(at) if reached(*at) => Health::Healthy,
            Self::UnhealthyAfter(at) if reached(*at) => Health::Unhealthy,
            Self::Timeline(steps) => steps
                .iter()
                .take_while(|(at, _)| reached(*at))
                .last()
                .map_or(Health::Starting, |(_, h)| *h),
            _ => Health::Starting,
        }
    }
}

/// What a container does when `stop` sends it SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSigterm {
    /// Exits `after` the signal with `code`. If that is later than the stop timeout, it is
    /// killed (137) at the timeout instead.
    Exit { after: Duration, code: i64 },
    /// Ignores the signal: `stop` kills it (137) once its timeout has elapsed.
    Ignore,
}

impl Default for OnSigterm {
    fn default() -> Self {
        Self::Exit {
            after: Duration::ZERO,
            code: SIGTERM_EXIT_CODE,
        }
    }
}

/// How containers of an image behave. The default runs until stopped, exits at once with
/// 143 on SIGTERM, passes its health check, and pulls and creates without trouble.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageBehavior {
    /// How long `ensure_image` takes to pull it (when not present yet).
    pub pull_delay: Duration,
    /// How long `start` takes before the container is running.
    pub start_delay: Duration,
    /// Runs this long after start, then exits by itself with `exit_code`; `None`: until
    /// stopped.
    pub run_for: Option<Duration>,
    /// Exit code when it exits by itself.
    pub exit_code: i64,
    pub on_sigterm: OnSigterm,
    pub health: HealthScript,
    /// Pulling it fails (`RuntimeError::Image`); it can still be used if already local.
    pub fail_pull: bool,
    /// Creating a container of it fails (`RuntimeError::Engine`).
    pub fail_create: bool,
    /// Instead of exiting by itself it is OOM-killed: `run_for` after start (at once if
    /// `run_for` is `None`), exit code 137 and `oom_killed`.
    pub oom: bool,
}

impl ImageBehavior {
    /// Runs until stopped (the default).
    pub fn runs_until_stopped() -> Self {
        Self::default()
    }

    /// Runs for `run_for`, then exits with `exit_code`.
    pub fn exits_after(run_for: Duration, exit_code: i64) -> Self {
        Self {
            run_for: Some(run_for),
            exit_code,
            ..Self::default()
        }
    }

    pub fn with_start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    pub fn with_pull_delay(mut self, delay: Duration) -> Self {
        self.pull_delay = delay;
        self
    }

    pub fn with_health(mut self, health: HealthScript) -> Self {
        self.health = health;
        self
    }

    pub fn with_on_sigterm(mut self, on_sigterm: OnSigterm) -> Self {
        self.on_sigterm = on_sigterm;
        self
    }

    pub fn ignoring_sigterm(self) -> Self {
        self.with_on_sigterm(OnSigterm::Ignore)
    }

    pub fn failing_pull(mut self) -> Self {
        self.fail_pull = true;
        self
    }

    pub fn failing_create(mut self) -> Self {
        self.fail_create = true;
        self
    }

    /// OOM-killed `after` start.
    pub fn oom_after(mut self, after: Duration) -> Self {
        self.oom = true;
        self.run_for = Some(after);
        self
    }
}

/// Calls made to the runtime, failed ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    pub host_infos: u64,
    pub ensure_images: u64,
    /// Pulls that happened (`ensure_image` of an image not yet local, successful or not).
    pub pulls: u64,
    pub creates: u64,
    pub starts: u64,
    pub stops: u64,
    pub removes: u64,
    pub inspects: u64,
    pub wait_exits: u64,
    pub lists: u64,
    pub stats: u64,
    /// Test-hook kills ([`SimulatedRuntime::kill`], [`SimulatedRuntime::oom_kill`]).
    pub kills: u64,
}

/// One container as the simulation holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimContainer {
    pub id: String,
    /// The spec it was created from (name as given; see `status.name` for the effective one).
    pub spec: ContainerSpec,
    /// What `inspect` reports now.
    pub status: ContainerStatus,
    /// How many times it went from not running to running.
    pub times_started: u32,
    pub created_at: Instant,
    /// The start of the current or last run.
    pub started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
}

/// Builds a [`SimulatedRuntime`].
#[derive(Debug, Clone)]
pub struct SimulatedRuntimeBuilder {
    host: HostInfo,
    images: HashMap<String, ImageBehavior>,
    local: HashSet<String>,
    default_behavior: ImageBehavior,
    accept_any_image: bool,
    id_seed: Option<u64>,
    groups: bool,
    bridge_gateway: Option<IpAddr>,
    wall_clock_start: Option<SystemTime>,
}

impl Default for SimulatedRuntimeBuilder {
    fn default() -> Self {
        Self {
            host: HostInfo {
                cpus: 4,
                memory_bytes: 8 * 1024 * 1024 * 1024,
                engine_version: "simulated".into(),
                architecture: "X86_64".into(),
            },
            images: HashMap::new(),
            local: HashSet::new(),
            default_behavior: ImageBehavior::default(),
            accept_any_image: false,
            id_seed: None,
            groups: true,
            bridge_gateway: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            wall_clock_start: None,
        }
    }
}

impl SimulatedRuntimeBuilder {
    pub fn host_info(mut self, host: HostInfo) -> Self {
        self.host = host;
        self
    }

    pub fn cpus(mut self, cpus: i64) -> Self {
        self.host.cpus = cpus;
        self
    }

    pub fn memory_bytes(mut self, bytes: i64) -> Self {
        self.host.memory_bytes = bytes;
        self
    }

    pub fn engine_version(mut self, version: impl Into<String>) -> Self {
        self.host.engine_version = version.into();
        self
    }

    /// An image in the registry: `ensure_image` pulls it.
    pub fn image(mut self, image: &str, behavior: ImageBehavior) -> Self {
        self.images.insert(normalize_image(image), behavior);
        self
    }

    /// An image already present locally (no pull needed before `create`).
    pub fn local_image(mut self, image: &str, behavior: ImageBehavior) -> Self {
        let image = normalize_image(image);
        self.local.insert(image.clone());
        self.images.insert(image, behavior);
        self
    }

    /// The behaviour of `sim/...` images (other than `sim/exit:N`) and of accepted unknown
    /// images. By default: runs until stopped.
    pub fn default_behavior(mut self, behavior: ImageBehavior) -> Self {
        self.default_behavior = behavior;
        self
    }

    /// Any image can be pulled, with the default behaviour (unless registered).
    pub fn accept_any_image(mut self) -> Self {
        self.accept_any_image = true;
        self
    }

    /// An engine that cannot make groups (cgroups): `create_group` answers `None`.
    pub fn without_groups(mut self) -> Self {
        self.groups = false;
        self
    }

    /// What `bridge_gateway` answers (by default 127.0.0.1, so that tests can reach what
    /// an agent serves to bridge-mode containers).
    pub fn bridge_gateway(mut self, ip: Option<IpAddr>) -> Self {
        self.bridge_gateway = ip;
        self
    }

    /// The wall-clock time of the moment `build` is called: container timestamps
    /// (`created_at`, `started_at`, `finished_at`) are this plus the tokio time elapsed
    /// since. By default the real time at `build`.
    pub fn wall_clock_start(mut self, at: SystemTime) -> Self {
        self.wall_clock_start = Some(at);
        self
    }

    /// Seeds container ids, for ids that repeat from run to run. By default each runtime in
    /// the process gets its own seed, so ids are unique across simulated hosts.
    pub fn id_seed(mut self, seed: u64) -> Self {
        self.id_seed = Some(seed);
        self
    }

    pub fn build(self) -> SimulatedRuntime {
        static NEXT_SEED: AtomicU64 = AtomicU64::new(1);
        let seed = self
            .id_seed
            .unwrap_or_else(|| NEXT_SEED.fetch_add(1, Ordering::Relaxed));
        SimulatedRuntime {
            state: Mutex::new(State {
                host: self.host,
                images: self.images,
                local: self.local,
                default_behavior: Arc::new(self.default_behavior),
                accept_any_image: self.accept_any_image,
                id_seed: seed,
                next_seq: 0,
                containers: HashMap::new(),
                names: HashMap::new(),
                due: BTreeMap::new(),
                bound: HashMap::new(),
                next_port: HashMap::new(),
                counters: SimCounters::default(),
                volumes: BTreeMap::new(),
                groups: self.groups.then(BTreeMap::new),
                bridge_gateway: self.bridge_gateway,
                wall_base: (
                    self.wall_clock_start.unwrap_or_else(SystemTime::now),
                    Instant::now(),
                ),
            }),
        }
    }
}

/// The in-memory engine. See the module docs for behaviours and semantics.
#[derive(Debug)]
pub struct SimulatedRuntime {
    state: Mutex<State>,
}

impl Default for SimulatedRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// A container's own exit, due at a time: (when, sequence number for a total order).
type DueKey = (Instant, u64);

#[derive(Debug)]
struct ScheduledExit {
    key: DueKey,
    code: i64,
    oom: bool,
}

/// The parts of a behaviour a container keeps after `create`.
#[derive(Debug)]
struct Resolved {
    start_delay: Duration,
    run_for: Option<Duration>,
    exit_code: i64,
    oom: bool,
    on_sigterm: OnSigterm,
    health: HealthScript,
}

#[derive(Debug)]
struct Container {
    id: String,
    name: String,
    seq: u64,
    spec: ContainerSpec,
    behavior: Arc<Resolved>,
    image_digest: String,
    has_health_check: bool,
    state: RunState,
    /// Bumped by every start, so a stop or kill never applies to a later run.
    run: u32,
    exit_code: Option<i64>,
    oom_killed: bool,
    error: Option<String>,
    ports: Vec<BoundPort>,
    created_at: Instant,
    started_at: Option<Instant>,
    finished_at: Option<Instant>,
    scheduled_exit: Option<ScheduledExit>,
    /// Bumped on every exit; dropped (closing receivers) on remove.
    changes: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    host: HostInfo,
    images: HashMap<String, ImageBehavior>,
    local: HashSet<String>,
    default_behavior: Arc<ImageBehavior>,
    accept_any_image: bool,
    id_seed: u64,
    next_seq: u64,
    containers: HashMap<String, Container>,
    /// Name -> id.
    names: HashMap<String, String>,
    /// Containers' own exits, in time order.
    due: BTreeMap<DueKey, String>,
    /// Host ports bound by running containers: (protocol, port) -> [(host ip, id)].
    bound: HashMap<(PortProtocol, u16), Vec<(String, String)>>,
    /// Next dynamic port to try, per protocol.
    next_port: HashMap<PortProtocol, u16>,
    counters: SimCounters,
    volumes: BTreeMap<String, VolumeInfo>,
    /// Groups by name; `None`: the engine cannot make them.
    groups: Option<BTreeMap<String, GroupLimits>>,
    bridge_gateway: Option<IpAddr>,
    /// (wall-clock time, tokio instant) of the same moment.
    wall_base: (SystemTime, Instant),
}

impl SimulatedRuntime {
    /// A runtime with the default host (4 cpus, 8 GiB, "simulated") and no registered
    /// images: only `sim/...` images are known.
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub fn builder() -> SimulatedRuntimeBuilder {
        SimulatedRuntimeBuilder::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across an await and no code panics while holding it with state half
        // updated; recover from a poisoning test assertion elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or replaces) an image's behaviour. Containers created from now on get it;
    /// existing ones keep theirs.
    pub fn set_behavior(&self, image: &str, behavior: ImageBehavior) {
        self.lock().images.insert(normalize_image(image), behavior);
    }

    /// Kills a running container from outside (a crash, `docker kill`): it exits at once
    /// with `exit_code`. Fails like Docker if it is not running.
    pub fn kill(&self, id: &str, exit_code: i64) -> Result<()> {
        self.kill_with(id, exit_code, false)
    }

    /// The kernel's OOM killer ends a running container: exit code 137, `oom_killed`.
    pub fn oom_kill(&self, id: &str) -> Result<()> {
        self.kill_with(id, SIGKILL_EXIT_CODE, true)
    }

    fn kill_with(&self, id: &str, exit_code: i64, oom: bool) -> Result<()> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        st.counters.kills += 1;
        let id = st.resolve(id)?;
        if st.containers[&id].state != RunState::Running {
            return Err(RuntimeError::Engine(format!(
                "Cannot kill container: {id}: Container {id} is not running"
            )));
        }
        st.finish(&id, exit_code, oom, now);
        Ok(())
    }

    /// Every container, oldest first.
    pub fn containers(&self) -> Vec<SimContainer> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        let mut all: Vec<&Container> = st.containers.values().collect();
        all.sort_by_key(|c| c.seq);
        let wall = st.wall_base;
        all.into_iter().map(|c| c.snapshot(now, wall)).collect()
    }

    /// One container by id, name or unique id prefix.
    pub fn container(&self, id: &str) -> Option<SimContainer> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        let id = st.resolve(id).ok()?;
        Some(st.containers[&id].snapshot(now, st.wall_base))
    }

    pub fn counters(&self) -> SimCounters {
        self.lock().counters
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> BTreeMap<String, VolumeInfo> {
        self.lock().volumes.clone()
    }

    /// Every group (`create_group`) that exists, by name.
    pub fn groups(&self) -> BTreeMap<String, GroupLimits> {
        self.lock().groups.clone().unwrap_or_default()
    }

    /// The wall-clock time a tokio instant stands for in container timestamps.
    pub fn wall_time(&self, at: Instant) -> SystemTime {
        self.lock().wall_time(at)
    }

    /// Whether the image is present locally (pulled or preloaded).
    pub fn has_image(&self, image: &str) -> bool {
        self.lock().local.contains(&normalize_image(image))
    }

    /// Waits until run `run` of container `id` is over (`true`, also when the container
    /// is removed) or `deadline` passes with it still running (`false`).
    async fn wait_not_running(&self, id: &str, run: u32, deadline: Option<Instant>) -> bool {
        loop {
            let (mut changes, wake) = {
                let now = Instant::now();
                let mut st = self.lock();
                st.settle_due(now);
                let Some(c) = st.containers.get(id) else {
                    return true;
                };
                if c.state != RunState::Running || c.run != run {
                    return true;
                }
                if deadline.is_some_and(|d| d <= now) {
                    return false;
                }
                let own_exit = c.scheduled_exit.as_ref().map(|s| s.key.0);
                let wake = match (own_exit, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (c.changes.subscribe(), wake)
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => {
                    // An error means the container was removed: the loop sees that.
                    let _ = changes.changed().await;
                }
            }
        }
    }
}

impl State {
    fn wall_time(&self, at: Instant) -> SystemTime {
        let (wall, base) = self.wall_base;
        if at >= base {
            wall + (at - base)
        } else {
            wall - (base - at)
        }
    }

    /// Whether `container:<x>` names a running container (for shared namespaces).
    fn joinable(&self, mode: Option<&str>) -> Result<()> {
        let Some(target) = mode.and_then(|m| m.strip_prefix("container:")) else {
            return Ok(());
        };
        let id = self.resolve(target)?;
        if self.containers[&id].state != RunState::Running {
            return Err(RuntimeError::Engine(format!(
                "cannot join namespaces of a non running container: {target}"
            )));
        }
        Ok(())
    }

    fn behavior_of(&self, image: &str) -> Option<Arc<ImageBehavior>> {
        if let Some(b) = self.images.get(image) {
            return Some(Arc::new(b.clone()));
        }
        if let Some(rest) = image.strip_prefix("sim/") {
            if let Some(code) = rest.strip_prefix("exit:").and_then(|c| c.parse().ok()) {
                return Some(Arc::new(ImageBehavior::exits_after(Duration::ZERO, code)));
            }
            return Some(Arc::clone(&self.default_behavior));
        }
        self.accept_any_image
            .then(|| Arc::clone(&self.default_behavior))
    }

    /// Finds a container by id, name or unique id prefix.
    fn resolve(&self, key: &str) -> Result<String> {
        if self.containers.contains_key(key) {
            return Ok(key.to_string());
        }
        if let Some(id) = self.names.get(key.trim_start_matches('/')) {
            return Ok(id.clone());
        }
        let not_found = || RuntimeError::NotFound(format!("No such container: {key}"));
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let mut found = self.containers.keys().filter(|id| id.starts_with(key));
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id.clone()),
            (Some(_), Some(_)) => Err(RuntimeError::Engine(format!(
                "multiple IDs found with provided prefix: {key}"
            ))),
            (None, _) => Err(not_found()),
        }
    }

    fn new_id(&mut self) -> (u64, String) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let base = self.id_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq;
        let id = (0..4u64)
            .map(|i| {
                format!(
                    "{:016x}",
                    mix(base.wrapping_add(i.wrapping_mul(0xA24B_AED4)))
                )
            })
            .collect();
        (seq, id)
    }

    /// Applies every container exit due by `now`, in time order.
    fn settle_due(&mut self, now: Instant) {
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            let Some(exit) = self
                .containers
                .get_mut(&id)
                .and_then(|c| c.scheduled_exit.take())
            else {
                continue;
            };
            self.finish(&id, exit.code, exit.oom, exit.key.0);
        }
    }

    fn schedule_exit(&mut self, id: &str, at: Instant, code: i64, oom: bool) {
        self.next_seq += 1;
        let key = (at, self.next_seq);
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if let Some(old) = c.scheduled_exit.replace(ScheduledExit { key, code, oom }) {
            self.due.remove(&old.key);
        }
        self.due.insert(key, id.to_string());
    }

    /// The container stops running.
    fn finish(&mut self, id: &str, code: i64, oom: bool, at: Instant) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if let Some(old) = c.scheduled_exit.take() {
            self.due.remove(&old.key);
        }
        c.state = RunState::Exited;
        c.exit_code = Some(code);
        c.oom_killed = oom;
        c.finished_at = Some(at);
        let ports = std::mem::take(&mut c.ports);
        c.changes.send_modify(|n| *n += 1);
        for p in ports {
            let key = (p.protocol, p.host_port);
            if let Some(holders) = self.bound.get_mut(&key) {
                holders.retain(|(_, holder)| holder != id);
                if holders.is_empty() {
                    self.bound.remove(&key);
                }
            }
        }
    }

    fn port_taken(
        &self,
        protocol: PortProtocol,
        port: u16,
        ip: &str,
        claimed: &[BoundPort],
    ) -> bool {
        let clash = |other: &str| other == ip || is_any(other) || is_any(ip);
        self.bound
            .get(&(protocol, port))
            .is_some_and(|holders| holders.iter().any(|(other, _)| clash(other)))
            || claimed
                .iter()
                .any(|c| c.protocol == protocol && c.host_port == port && clash(&c.host_ip))
    }

    /// Binds the container's published ports, all or none.
    fn bind_ports(&mut self, id: &str) -> Result<Vec<BoundPort>> {
        let spec = &self.containers[id].spec;
        if !publishes_ports(&spec.network_mode) {
            return Ok(Vec::new());
        }
        let mut claimed: Vec<BoundPort> = Vec::with_capacity(spec.ports.len());
        let mut cursors = self.next_port.clone();
        for p in &spec.ports {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0".to_string()
            } else {
                p.host_ip.clone()
            };
            let host_port = if p.host_port != 0 {
                if self.port_taken(p.protocol, p.host_port, &ip, &claimed) {
                    return Err(RuntimeError::Engine(format!(
                        "driver failed programming external connectivity on endpoint {}: \
                         Bind for {ip}:{} failed: port is already allocated",
                        self.containers[id].name, p.host_port
                    )));
                }
                p.host_port
            } else {
                let cursor = cursors.entry(p.protocol).or_insert(DYNAMIC_PORT_FIRST);
                let mut candidate = *cursor;
                let mut tried = 0u32;
                while self.port_taken(p.protocol, candidate, &ip, &claimed) {
                    tried += 1;
                    if tried > u32::from(DYNAMIC_PORT_LAST - DYNAMIC_PORT_FIRST) {
                        return Err(RuntimeError::Engine(
                            "no free host ports in the dynamic range".into(),
                        ));
                    }
                    candidate = next_dynamic(candidate);
                }
                *cursor = next_dynamic(candidate);
                candidate
            };
            claimed.push(BoundPort {
                container_port: p.container_port,
                protocol: p.protocol,
                host_ip: ip,
                host_port,
            });
        }
        self.next_port = cursors;
        for p in &claimed {
            self.bound
                .entry((p.protocol, p.host_port))
                .or_default()
                .push((p.host_ip.clone(), id.to_string()));
        }
        claimed.sort_by_key(|p| (p.container_port, p.protocol.as_str()));
        Ok(claimed)
    }

    fn remove(&mut self, id: &str, now: Instant) {
        if self.containers[id].state == RunState::Running {
            self.finish(id, SIGKILL_EXIT_CODE, false, now);
        }
        if let Some(c) = self.containers.remove(id) {
            self.names.remove(&c.name);
        }
    }
}

impl Container {
    fn snapshot(&self, now: Instant, wall: (SystemTime, Instant)) -> SimContainer {
        SimContainer {
            id: self.id.clone(),
            spec: self.spec.clone(),
            status: self.status(now, wall),
            times_started: self.run,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }

    fn status(&self, now: Instant, wall: (SystemTime, Instant)) -> ContainerStatus {
        let to_wall = |at: Instant| {
            if at >= wall.1 {
                wall.0 + (at - wall.1)
            } else {
                wall.0 - (wall.1 - at)
            }
        };
        let health = match (self.has_health_check, self.state) {
            (false, _) | (true, RunState::Created) => None,
            (true, RunState::Exited) => Some(Health::Unhealthy),
            (true, RunState::Running) => {
                let elapsed = now.saturating_duration_since(self.started_at.unwrap_or(now));
                let check = self.spec.health_check.as_ref();
                check.map(|check| self.behavior.health.health_after(elapsed, check))
            }
        };
        ContainerStatus {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            exit_code: if self.state == RunState::Exited {
                self.exit_code
            } else {
                None
            },
            error: self.error.clone(),
            oom_killed: self.oom_killed,
            health,
            ports: self.ports.clone(),
            labels: self.spec.labels.clone(),
            image_digest: Some(self.image_digest.clone()),
            image: self.spec.image.clone(),
            created_at: Some(to_wall(self.created_at)),
            started_at: self.started_at.map(to_wall),
            finished_at: if self.state == RunState::Running {
                None
            } else {
                self.finished_at.map(to_wall)
            },
            ip_address: (self.state == RunState::Running
                && publishes_ports(&self.spec.network_mode)
                && !self.spec.network_disabled)
                .then(|| format!("172.17.{}.{}", (self.seq / 250) % 250, self.seq % 250 + 2)),
        }
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for SimulatedRuntime {
    fn now(&self) -> SystemTime {
        self.wall_time(Instant::now())
    }

    async fn host_info(&self) -> Result<HostInfo> {
        let mut st = self.lock();
        st.counters.host_infos += 1;
        Ok(st.host.clone())
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        let name = normalize_image(image);
        let delay = {
            let mut st = self.lock();
            st.counters.ensure_images += 1;
            if st.local.contains(&name) {
                return Ok(());
            }
            st.counters.pulls += 1;
            let Some(behavior) = st.behavior_of(&name) else {
                return Err(RuntimeError::Image {
                    image: image.to_string(),
                    message: format!(
                        "pull access denied for {name}, repository does not exist or may \
                         require 'docker login'"
                    ),
                });
            };
            if behavior.fail_pull {
                return Err(RuntimeError::Image {
                    image: image.to_string(),
                    message: format!("simulated pull failure for {name}"),
                });
            }
            behavior.pull_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.lock().local.insert(name);
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        st.counters.creates += 1;

        let name = spec.name.trim_start_matches('/').to_string();
        if !name.is_empty() && !valid_name(&name) {
            return Err(RuntimeError::Engine(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        check_memory(spec)?;
        let image = normalize_image(&spec.image);
        if !st.local.contains(&image) {
            return Err(RuntimeError::Image {
                image: spec.image.clone(),
                message: format!("No such image: {image}"),
            });
        }
        let behavior = st.behavior_of(&image).unwrap_or_default();
        let resolved = resolve_behavior(&behavior, spec)?;
        if behavior.fail_create {
            return Err(RuntimeError::Engine(format!(
                "simulated create failure for image {image}"
            )));
        }
        if let Some(holder) = st.names.get(&name) {
            return Err(RuntimeError::Engine(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \
                 \"{holder}\". You have to remove (or rename) that container to be able to \
                 reuse that name."
            )));
        }
        for from in &spec.volumes_from {
            st.resolve(&from.container).map_err(|_| {
                RuntimeError::Engine(format!("No such container: {}", from.container))
            })?;
        }
        for link in &spec.links {
            let target = link.split_once(':').map_or(link.as_str(), |(t, _)| t);
            st.resolve(target).map_err(|_| {
                RuntimeError::Engine(format!(
                    "Could not get container for {target}: No such container"
                ))
            })?;
        }
        // Named volumes a container mounts are created with the default driver if missing.
        for m in &spec.mounts {
            if let MountSource::Volume(v) = &m.source {
                st.volumes.entry(v.clone()).or_insert_with(|| VolumeInfo {
                    name: v.clone(),
                    driver: "local".into(),
                    labels: BTreeMap::new(),
                });
            }
        }

        let (seq, id) = st.new_id();
        let name = if name.is_empty() {
            let mut n = seq;
            loop {
                let candidate = format!("sim_container_{n}");
                if !st.names.contains_key(&candidate) {
                    break candidate;
                }
                n += 1;
            }
        } else {
            name
        };
        let has_health_check = spec
            .health_check
            .as_ref()
            .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
        let (changes, _) = watch::channel(0);
        st.names.insert(name.clone(), id.clone());
        st.containers.insert(
            id.clone(),
            Container {
                id: id.clone(),
                name,
                seq,
                spec: spec.clone(),
                behavior: Arc::new(resolved),
                image_digest: digest_of(&image),
                has_health_check,
                state: RunState::Created,
                run: 0,
                exit_code: None,
                oom_killed: false,
                error: None,
                ports: Vec::new(),
                created_at: now,
                started_at: None,
                finished_at: None,
                scheduled_exit: None,
                changes,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        let (id, delay) = {
            let mut st = self.lock();
            st.settle_due(Instant::now());
            st.counters.starts += 1;
            let id = st.resolve(id)?;
            let c = &st.containers[&id];
            if c.state == RunState::Running {
                return Ok(());
            }
            (id, c.behavior.start_delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        let Some(c) = st.containers.get(&id) else {
            return Err(RuntimeError::NotFound(format!("No such container: {id}")));
        };
        if c.state == RunState::Running {
            // Another start got there first.
            return Ok(());
        }
        let behavior = Arc::clone(&c.behavior);
        let namespaces = [c.spec.pid_mode.clone(), c.spec.ipc_mode.clone()];
        for mode in &namespaces {
            if let Err(e) = st.joinable(mode.as_deref()) {
                let c = st.containers.get_mut(&id).expect("resolved above");
                c.error = Some(e.to_string());
                return Err(e);
            }
        }
        let ports = match st.bind_ports(&id) {
            Ok(ports) => ports,
            Err(e) => {
                let c = st.containers.get_mut(&id).expect("resolved above");
                c.error = Some(e.to_string());
                if c.state == RunState::Exited {
                    c.exit_code = Some(128);
                }
                return Err(e);
            }
        };
        let c = st.containers.get_mut(&id).expect("resolved above");
        c.state = RunState::Running;
        c.run += 1;
        c.exit_code = None;
        c.oom_killed = false;
        c.error = None;
        c.ports = ports;
        c.started_at = Some(now);
        c.finished_at = None;
        let own_exit = match (behavior.oom, behavior.run_for) {
            (true, run_for) => Some((run_for.unwrap_or_default(), SIGKILL_EXIT_CODE)),
            (false, Some(run_for)) => Some((run_for, behavior.exit_code)),
            (false, None) => None,
        };
        if let Some((after, code)) = own_exit {
            st.schedule_exit(&id, at_or_far(now, after), code, behavior.oom);
        }
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let now = Instant::now();
        let deadline = at_or_far(now, timeout);
        let (id, run) = {
            let mut st = self.lock();
            st.settle_due(now);
            st.counters.stops += 1;
            let id = st.resolve(id)?;
            let c = &st.containers[&id];
            if c.state != RunState::Running {
                return Ok(());
            }
            let run = c.run;
            if let OnSigterm::Exit { after, code } = c.behavior.on_sigterm {
                let at = at_or_far(now, after);
                let sooner = c.scheduled_exit.as_ref().is_none_or(|s| at < s.key.0);
                if sooner && at <= deadline {
                    st.schedule_exit(&id, at, code, false);
                }
            }
            st.settle_due(now);
            (id, run)
        };
        if self.wait_not_running(&id, run, Some(deadline)).await {
            return Ok(());
        }
        // The timeout has elapsed: SIGKILL.
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        if let Some(c) = st.containers.get(&id) {
            if c.state == RunState::Running && c.run == run {
                st.finish(&id, SIGKILL_EXIT_CODE, false, now);
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        st.counters.removes += 1;
        match st.resolve(id) {
            Ok(id) => {
                st.remove(&id, now);
                Ok(())
            }
            // As the Docker driver: removing what is not there is done.
            Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        st.counters.inspects += 1;
        let id = st.resolve(id)?;
        Ok(st.containers[&id].status(now, st.wall_base))
    }

    async fn wait_exit(&self, id: &str) -> Result<()> {
        let (id, run) = {
            let mut st = self.lock();
            st.settle_due(Instant::now());
            st.counters.wait_exits += 1;
            let id = st.resolve(id)?;
            let run = st.containers[&id].run;
            (id, run)
        };
        self.wait_not_running(&id, run, None).await;
        Ok(())
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo> {
        let mut st = self.lock();
        if let Some(existing) = st.volumes.get(&spec.name) {
            return Ok(existing.clone());
        }
        if !spec.name.is_empty() && !valid_name(&spec.name) {
            return Err(RuntimeError::Engine(format!(
                "create {}: volume name is too short, names should be at least two alphanumeric characters",
                spec.name
            )));
        }
        let info = VolumeInfo {
            name: spec.name.clone(),
            driver: spec.driver.clone().unwrap_or_else(|| "local".into()),
            labels: spec.labels.clone(),
        };
        if info.driver != "local" {
            return Err(RuntimeError::Engine(format!(
                "error looking up volume plugin {}: plugin \"{}\" not found",
                info.driver, info.driver
            )));
        }
        st.volumes.insert(spec.name.clone(), info.clone());
        Ok(info)
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        Ok(self.lock().volumes.get(name).cloned())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let mut st = self.lock();
        let in_use = st.containers.values().any(|c| {
            c.spec
                .mounts
                .iter()
                .any(|m| m.source == MountSource::Volume(name.to_string()))
        });
        if in_use && st.volumes.contains_key(name) {
            return Err(RuntimeError::Engine(format!(
                "remove {name}: volume is in use"
            )));
        }
        st.volumes.remove(name);
        Ok(())
    }

    async fn list_volumes_labelled(&self, label: &str, value: &str) -> Result<Vec<VolumeInfo>> {
        Ok(self
            .lock()
            .volumes
            .values()
            .filter(|v| v.labels.get(label).is_some_and(|l| l == value))
            .cloned()
            .collect())
    }

    async fn stats(&self, id: &str) -> Result<serde_json::Value> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        st.counters.stats += 1;
        let id = st.resolve(id)?;
        let c = &st.containers[&id];
        let limit = c
            .spec
            .memory_limit_mib
            .map_or(st.host.memory_bytes, |m| m.saturating_mul(1024 * 1024));
        let running = c.state == RunState::Running;
        let read = chrono::DateTime::<chrono::Utc>::from(st.wall_time(now)).to_rfc3339();
        Ok(serde_json::json!({
            "read": read,
            "preread": "0001-01-01T00:00:00Z",
            "id": c.id,
            "name": format!("/{}", c.name),
            "num_procs": 0,
            "pids_stats": {"current": if running { 1 } else { 0 }},
            "memory_stats": {"usage": if running { 1024 * 1024 } else { 0 }, "limit": limit},
            "cpu_stats": {"cpu_usage": {"total_usage": 0}, "online_cpus": st.host.cpus},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}},
            "blkio_stats": {},
            "storage_stats": {},
        }))
    }

    async fn create_group(&self, name: &str, limits: &GroupLimits) -> Result<Option<String>> {
        let mut st = self.lock();
        Ok(st.groups.as_mut().map(|groups| {
            groups.insert(name.to_string(), *limits);
            format!("/{name}")
        }))
    }

    async fn remove_group(&self, name: &str) -> Result<()> {
        let mut st = self.lock();
        let parent = format!("/{name}");
        let busy = st.containers.values().any(|c| {
            c.state == RunState::Running && c.spec.cgroup_parent.as_deref() == Some(&parent)
        });
        if busy {
            return Err(RuntimeError::Engine(format!(
                "removing group {name}: device or resource busy"
            )));
        }
        if let Some(groups) = st.groups.as_mut() {
            groups.remove(name);
        }
        Ok(())
    }

    async fn ensure_pause_image(&self) -> Result<String> {
        let mut st = self.lock();
        let image = normalize_image(SIM_PAUSE_IMAGE);
        st.images
            .entry(image.clone())
            .or_insert_with(|| ImageBehavior::runs_until_stopped().ignoring_sigterm());
        st.local.insert(image);
        Ok(SIM_PAUSE_IMAGE.to_string())
    }

    async fn bridge_gateway(&self) -> Result<Option<IpAddr>> {
        Ok(self.lock().bridge_gateway)
    }

    async fn list_labelled(&self, label: &str, value: &str) -> Result<Vec<ContainerStatus>> {
        let now = Instant::now();
        let mut st = self.lock();
        st.settle_due(now);
        st.counters.lists += 1;
        let mut found: Vec<&Container> = st
            .containers
            .values()
            .filter(|c| c.spec.labels.get(label).is_some_and(|v| v == value))
            .collect();
        // Newest first, as Docker lists them.
        found.sort_by_key(|c| std::cmp::Reverse(c.seq));
        let wall = st.wall_base;
        Ok(found.into_iter().map(|c| c.status(now, wall)).collect())
    }
}

/// The behaviour a container gets: its image's, overridden by a simulator command.
fn resolve_behavior(image: &ImageBehavior, spec: &ContainerSpec) -> Result<Resolved> {
    let mut resolved = Resolved {
        start_delay: image.start_delay,
        run_for: image.run_for,
        exit_code: image.exit_code,
        oom: image.oom,
        on_sigterm: image.on_sigterm,
        health: image.health.clone(),
    };
    let argv: Vec<&str> = spec
        .entrypoint
        .iter()
        .chain(spec.command.iter())
        .flatten()
        .map(String::as_str)
        .collect();
    let mut args = argv.as_slice();
    if args.first() == Some(&"ignore-sigterm") {
        resolved.on_sigterm = OnSigterm::Ignore;
        args = &args[1..];
    }
    let bad = |why: &str| {
        RuntimeError::InvalidSpec(format!(
            "simulator command {argv:?}: {why} (see berth_runtime::SimulatedRuntime docs)"
        ))
    };
    let code = |s: &str| s.parse::<i64>().map_err(|_| bad("bad exit code"));
    let mut ends = |run_for: Option<Duration>, exit_code: i64| {
        resolved.run_for = run_for;
        resolved.exit_code = exit_code;
    };
    match args {
        ["run"] => ends(None, 0),
        ["exit", n] => ends(Some(Duration::ZERO), code(n)?),
        ["sleep", s] => ends(parse_duration(s).ok_or_else(|| bad("bad duration"))?, 0),
        ["exit-after", s, n] => ends(
            Some(
                parse_duration(s)
                    .ok_or_else(|| bad("bad duration"))?
                    .ok_or_else(|| bad("exit-after needs a finite duration"))?,
            ),
            code(n)?,
        ),
        ["check-env", pair] => {
            let (key, value) = pair.split_once('=').ok_or_else(|| bad("want NAME=VALUE"))?;
            let present = spec.env.iter().any(|(k, v)| k == key && v == value);
            ends(Some(Duration::ZERO), if present { 0 } else { 1 });
        }
        [verb, ..]
            if matches!(
                *verb,
                "run" | "exit" | "sleep" | "exit-after" | "check-env" | "ignore-sigterm"
            ) =>
        {
            return Err(bad("wrong number of arguments"));
        }
        _ => {}
    }
    Ok(resolved)
}

/// `Some(None)`: forever ("infinity"); `Some(Some(d))`: d; `None`: unparseable.
fn parse_duration(s: &str) -> Option<Option<Duration>> {
    if s == "infinity" || s == "inf" {
        return Some(None);
    }
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok().map(Some)
}

/// Docker's checks on memory settings at create.
fn check_memory(spec: &ContainerSpec) -> Result<()> {
    let limit = spec
        .memory_limit_mib
        .map(|m| mib_to_bytes("memory limit", m))
        .transpose()?;
    let reservation = spec
        .memory_reservation_mib
        .map(|m| mib_to_bytes("memory reservation", m))
        .transpose()?;
    if let Some(limit) = limit.filter(|l| *l > 0) {
        if limit < 6 * 1024 * 1024 {
            return Err(RuntimeError::Engine(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
        if reservation.is_some_and(|r| r > limit) {
            return Err(RuntimeError::Engine(
                "Minimum memory limit can not be less than memory reservation limit, see usage"
                    .into(),
            ));
        }
    }
    if let Some(swap) = spec.memory_swap_mib.filter(|s| *s >= 0) {
        match spec.memory_limit_mib {
            None => {
                return Err(RuntimeError::Engine(
                    "You should always set the Memory limit when using Memoryswap limit, see usage"
                        .into(),
                ))
            }
            Some(m) if swap < m => {
                return Err(RuntimeError::Engine(
                    "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
                ))
            }
            _ => {}
        }
    }
    if spec
        .memory_swappiness
        .is_some_and(|s| !(0..=100).contains(&s))
    {
        return Err(RuntimeError::Engine(
            "Invalid value for memory swappiness: must be 0 to 100".into(),
        ));
    }
    Ok(())
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `nginx` -> `nginx:latest`; drops Docker Hub's implicit prefixes.
fn normalize_image(image: &str) -> String {
    let image = image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .or_else(|| image.strip_prefix("index.docker.io/library/"))
        .or_else(|| image.strip_prefix("index.docker.io/"))
        .unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// A stable, Docker-looking image id for an image name.
fn digest_of(image: &str) -> String {
    // FNV-1a, then spread over 256 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in image.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let hex: String = (0..4u64).map(|i| format!("{:016x}", mix(h ^ i))).collect();
    format!("sha256:{hex}")
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn is_any(ip: &str) -> bool {
    ip == "0.0.0.0" || ip == "::"
}

fn next_dynamic(port: u16) -> u16 {
    if port >= DYNAMIC_PORT_LAST {
        DYNAMIC_PORT_FIRST
    } else {
        port + 1
    }
}

fn at_or_far(now: Instant, after: Duration) -> Instant {
    now.checked_add(after).unwrap_or(now + FAR_FUTURE)
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;
    use std::sync::Arc;

    use futures_util::FutureExt;

    use super::*;
    use crate::conformance::{self, TestImages};
    use crate::PortBinding;

    fn sim_images() -> TestImages {
        TestImages {
            long_running_image: "sim/service".into(),
            long_running_command: vec!["run".into()],
            long_running_ready_check: vec!["CMD-SHELL".into(), "true".into()],
            ignores_sigterm_command: vec!["ignore-sigterm".into(), "run".into()],
            exiting_image: "sim/job".into(),
            exit_with: |code| vec!["exit".into(), code.to_string()],
            exit_unless_env: |name, value| vec!["check-env".into(), format!("{name}={value}")],
        }
    }

    macro_rules! conformance_tests {
        ($($check:ident),* $(,)?) => {
            mod conformance_suite {
                use super::*;
                $(
                    #[tokio::test(start_paused = true)]
                    async fn $check() {
                        let rt = SimulatedRuntime::new();
                        conformance::$check(&rt, &sim_images()).await;
                    }
                )*
            }
        };
    }

    conformance_tests!(
        host_info,
        images_are_pulled_or_refused,
        create_start_inspect,
        port_bindings,
        stop_with_timeout,
        wait_exit,
        exit_code,
        remove,
        list_labelled,
        duplicate_name,
        health_check,
        volumes,
        timestamps_and_stats,
        shared_namespaces_and_groups,
        run_all,
    );

    /// The whole suite on one runtime in real time: no reliance on paused time.
    #[tokio::test]
    async fn conformance_in_real_time() {
        let rt = SimulatedRuntime::new();
        let images = sim_images();
        conformance::create_start_inspect(&rt, &images).await;
        conformance::exit_code(&rt, &images).await;
        conformance::list_labelled(&rt, &images).await;
        // The suite removed everything it made.
        assert!(rt.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_suite_cleans_up_after_a_failing_check() {
        let rt = SimulatedRuntime::new();
        let mut images = sim_images();
        // Wrong on purpose: "exit with 3" exits with 4, so exit_code fails midway.
        images.exit_with = |code| vec!["exit".into(), (code + 1).to_string()];
        let outcome = AssertUnwindSafe(conformance::exit_code(&rt, &images))
            .catch_unwind()
            .await;
        assert!(outcome.is_err(), "the check should have failed");
        assert!(rt.containers().is_empty(), "{:?}", rt.containers());
    }

    fn spec(name: &str, image: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            command: (!command.is_empty()).then(|| command.iter().map(|s| s.to_string()).collect()),
            network_mode: "bridge".into(),
            ..ContainerSpec::default()
        }
    }

    fn port(container_port: u16, host_port: u16, protocol: PortProtocol) -> PortBinding {
        PortBinding {
            container_port,
            host_port,
            protocol,
            host_ip: String::new(),
        }
    }

    fn check(interval_ms: u64, retries: u32, start_period_ms: u64) -> HealthCheckSpec {
        HealthCheckSpec {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_millis(start_period_ms),
        }
    }

    async fn run(rt: &SimulatedRuntime, spec: &ContainerSpec) -> String {
        rt.ensure_image(&spec.image).await.expect("ensure_image");
        let id = rt.create(spec).await.expect("create");
        rt.start(&id).await.expect("start");
        id
    }

    async fn status(rt: &SimulatedRuntime, id: &str) -> ContainerStatus {
        rt.inspect(id).await.expect("inspect")
    }

    #[tokio::test]
    async fn host_info_is_configured() {
        let rt = SimulatedRuntime::builder()
            .cpus(16)
            .memory_bytes(64 << 30)
            .engine_version("27.0.3")
            .build();
        let host = rt.host_info().await.unwrap();
        assert_eq!(
            host,
            HostInfo {
                cpus: 16,
                memory_bytes: 64 << 30,
                engine_version: "27.0.3".into(),
                architecture: "X86_64".into(),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn images_are_known_pulled_once_and_needed_locally() {
        let rt = SimulatedRuntime::builder()
            .image("registry.example/app:1", ImageBehavior::default())
            .image(
                "nginx",
                ImageBehavior::default().with_pull_delay(Duration::from_secs(3)),
            )
            .image("broken:1", ImageBehavior::default().failing_pull())
            .local_image("preloaded:1", ImageBehavior::default().failing_pull())
            .build();

        let err = rt.ensure_image("unknown/app:1").await.unwrap_err();
        assert!(matches!(err, RuntimeError::Image { ref image, .. } if image == "unknown/app:1"));
        let err = rt.ensure_image("broken:1").await.unwrap_err();
        assert!(matches!(err, RuntimeError::Image { .. }), "{err:?}");

        // Not pulled yet: create refuses it.
        let err = rt
            .create(&spec("aa", "registry.example/app:1", &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Image { .. }), "{err:?}");
        rt.ensure_image("registry.example/app:1").await.unwrap();
        rt.ensure_image("registry.example/app:1").await.unwrap();
        rt.create(&spec("aa", "registry.example/app:1", &[]))
            .await
            .unwrap();

        // Docker Hub names are one image however spelled; the pull takes its time.
        let begun = Instant::now();
        rt.ensure_image("docker.io/library/nginx:latest")
            .await
            .unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(3));
        assert!(rt.has_image("nginx"));
        rt.create(&spec("bb", "nginx", &[])).await.unwrap();

        // Preloaded: no pull, so its failing pull does not matter.
        rt.ensure_image("preloaded:1").await.unwrap();
        rt.create(&spec("cc", "preloaded:1", &[])).await.unwrap();

        let counters = rt.counters();
        assert_eq!(counters.ensure_images, 6);
        assert_eq!(
            counters.pulls, 4,
            "unknown, broken, app, nginx: {counters:?}"
        );
        assert_eq!(counters.creates, 4);
    }

    #[tokio::test]
    async fn any_image_can_be_accepted() {
        let rt = SimulatedRuntime::builder()
            .accept_any_image()
            .default_behavior(ImageBehavior::exits_after(Duration::ZERO, 7))
            .build();
        let id = run(&rt, &spec("aa", "whatever/image:2", &[])).await;
        rt.wait_exit(&id).await.unwrap();
        assert_eq!(status(&rt, &id).await.exit_code, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn start_takes_its_delay_in_tokio_time() {
        let rt = Arc::new(
            SimulatedRuntime::builder()
                .image(
                    "slow:1",
                    ImageBehavior::default().with_start_delay(Duration::from_secs(2)),
                )
                .build(),
        );
        rt.ensure_image("slow:1").await.unwrap();
        let id = rt.create(&spec("slow", "slow:1", &[])).await.unwrap();
        let begun = Instant::now();
        let starting = tokio::spawn({
            let rt = Arc::clone(&rt);
            let id = id.clone();
            async move { rt.start(&id).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(status(&rt, &id).await.state, RunState::Created);
        starting.await.unwrap().unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(2));
        assert_eq!(status(&rt, &id).await.state, RunState::Running);
    }

    #[tokio::test(start_paused = true)]
    async fn exits_after_its_run_time_with_its_code() {
        let rt = SimulatedRuntime::builder()
            .image(
                "job:1",
                ImageBehavior::exits_after(Duration::from_secs(5), 2),
            )
            .build();
        let id = run(&rt, &spec("job", "job:1", &[])).await;
        let begun = Instant::now();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(status(&rt, &id).await.state, RunState::Running);
        rt.wait_exit(&id).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(5));
        let done = status(&rt, &id).await;
        assert_eq!((done.state, done.exit_code), (RunState::Exited, Some(2)));
        let listed = rt.containers();
        assert_eq!(listed[0].finished_at, Some(begun + Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn sim_exit_image_exits_with_its_tag() {
        let rt = SimulatedRuntime::new();
        let id = run(&rt, &spec("ee", "sim/exit:3", &[])).await;
        rt.wait_exit(&id).await.unwrap();
        assert_eq!(status(&rt, &id).await.exit_code, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn commands_select_behaviour() {
        let rt = SimulatedRuntime::builder()
            .image(
                "job:1",
                ImageBehavior::exits_after(Duration::from_secs(1), 9),
            )
            .build();
        rt.ensure_image("job:1").await.unwrap();
        rt.ensure_image("sim/x").await.unwrap();
        // (command, exits after, exit code); None: still running after an hour.
        type Case<'a> = (&'a [&'a str], Option<(u64, i64)>);
        let cases: &[Case] = &[
            (&[], Some((1000, 9))),
            (&["nginx", "-g", "daemon off;"], Some((1000, 9))),
            (&["exit", "3"], Some((0, 3))),
            (&["sleep", "0.2"], Some((200, 0))),
            (&["sleep", "2m"], Some((120_000, 0))),
            (&["exit-after", "0.2", "1"], Some((200, 1))),
            (&["exit-after", "1500ms", "4"], Some((1500, 4))),
            (&["run"], None),
            (&["sleep", "infinity"], None),
            (&["ignore-sigterm", "exit", "5"], Some((0, 5))),
        ];
        for (i, (command, expect)) in cases.iter().enumerate() {
            let id = rt
                .create(&spec(&format!("cc{i}"), "job:1", command))
                .await
                .unwrap();
            let begun = Instant::now();
            rt.start(&id).await.unwrap();
            match expect {
                Some((ms, code)) => {
                    rt.wait_exit(&id).await.unwrap();
                    assert_eq!(begun.elapsed(), Duration::from_millis(*ms), "{command:?}");
                    assert_eq!(status(&rt, &id).await.exit_code, Some(*code), "{command:?}");
                }
                None => {
                    tokio::time::advance(Duration::from_secs(3600)).await;
                    assert_eq!(
                        status(&rt, &id).await.state,
                        RunState::Running,
                        "{command:?}"
                    );
                    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
                }
            }
        }
        // Entrypoint and command together make the argv.
        let mut both = spec("both", "sim/x", &["4"]);
        both.entrypoint = Some(vec!["exit".into()]);
        let id = run(&rt, &both).await;
        rt.wait_exit(&id).await.unwrap();
        assert_eq!(status(&rt, &id).await.exit_code, Some(4));

        for bad in [
            &["exit"][..],
            &["exit", "three"],
            &["sleep", "soon"],
            &["sleep", "-1"],
            &["exit-after", "1"],
            &["exit-after", "infinity", "1"],
            &["check-env", "NOEQUALS"],
            &["run", "extra"],
            &["ignore-sigterm", "exit"],
        ] {
            let err = rt.create(&spec("bad", "sim/x", bad)).await.unwrap_err();
            assert!(
                matches!(err, RuntimeError::InvalidSpec(_)),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn check_env_reads_the_spec_env() {
        let rt = SimulatedRuntime::new();
        for (env_value, code) in [("yes", 0), ("no", 1)] {
            let mut s = spec(
                &format!("env-{env_value}"),
                "sim/x",
                &["check-env", "FLAG=yes"],
            );
            s.env = vec![("FLAG".into(), env_value.into())];
            let id = run(&rt, &s).await;
            rt.wait_exit(&id).await.unwrap();
            assert_eq!(status(&rt, &id).await.exit_code, Some(code));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_is_graceful_by_default() {
        let rt = SimulatedRuntime::new();
        let id = run(&rt, &spec("svc", "sim/svc", &[])).await;
        let begun = Instant::now();
        rt.stop(&id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::ZERO);
        let s = status(&rt, &id).await;
        assert_eq!((s.state, s.exit_code), (RunState::Exited, Some(143)));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_kills_after_the_timeout_when_sigterm_is_ignored() {
        let rt = Arc::new(
            SimulatedRuntime::builder()
                .image("stubborn:1", ImageBehavior::default().ignoring_sigterm())
                .build(),
        );
        let id = run(&rt, &spec("stubborn", "stubborn:1", &[])).await;
        let begun = Instant::now();
        let stopping = tokio::spawn({
            let rt = Arc::clone(&rt);
            let id = id.clone();
            async move { rt.stop(&id, Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(status(&rt, &id).await.state, RunState::Running);
        assert!(!stopping.is_finished());
        stopping.await.unwrap().unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(10));
        assert_eq!(status(&rt, &id).await.exit_code, Some(137));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_shutdown_finishes_or_is_killed() {
        let slow = OnSigterm::Exit {
            after: Duration::from_secs(2),
            code: 0,
        };
        let rt = SimulatedRuntime::builder()
            .image("slow:1", ImageBehavior::default().with_on_sigterm(slow))
            .build();
        // Within the timeout: exits by itself, with its code.
        let id = run(&rt, &spec("aa", "slow:1", &[])).await;
        let begun = Instant::now();
        rt.stop(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(2));
        assert_eq!(status(&rt, &id).await.exit_code, Some(0));
        // Beyond it: killed at the timeout.
        let id = run(&rt, &spec("bb", "slow:1", &[])).await;
        let begun = Instant::now();
        rt.stop(&id, Duration::from_secs(1)).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(1));
        assert_eq!(status(&rt, &id).await.exit_code, Some(137));
        // A container that ends by itself during the stop keeps its own code.
        let id = run(
            &rt,
            &spec("cc", "slow:1", &["ignore-sigterm", "exit-after", "3", "5"]),
        )
        .await;
        let begun = Instant::now();
        rt.stop(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(3));
        assert_eq!(status(&rt, &id).await.exit_code, Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_exit_resolves_on_stop_kill_and_remove() {
        let rt = Arc::new(SimulatedRuntime::new());
        let waiter = |id: String| {
            let rt = Arc::clone(&rt);
            tokio::spawn(async move { rt.wait_exit(&id).await })
        };
        let a = run(&rt, &spec("aa", "sim/svc", &[])).await;
        let b = run(&rt, &spec("bb", "sim/svc", &[])).await;
        let c = run(&rt, &spec("cc", "sim/svc", &[])).await;
        let (wa, wb, wc) = (waiter(a.clone()), waiter(b.clone()), waiter(c.clone()));
        tokio::task::yield_now().await;
        assert!(!wa.is_finished() && !wb.is_finished() && !wc.is_finished());

        rt.stop(&a, Duration::from_secs(5)).await.unwrap();
        wa.await.unwrap().unwrap();
        rt.kill(&b, 1).unwrap();
        wb.await.unwrap().unwrap();
        rt.remove(&c).await.unwrap();
        wc.await.unwrap().unwrap();
        assert_eq!(status(&rt, &b).await.exit_code, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn kill_and_oom() {
        let rt = SimulatedRuntime::builder()
            .image(
                "leaky:1",
                ImageBehavior::default().oom_after(Duration::from_secs(60)),
            )
            .build();
        let id = run(&rt, &spec("svc", "sim/svc", &[])).await;
        rt.kill(&id, 139).unwrap();
        let s = status(&rt, &id).await;
        assert_eq!(
            (s.state, s.exit_code, s.oom_killed),
            (RunState::Exited, Some(139), false)
        );
        let err = rt.kill(&id, 1).unwrap_err();
        assert!(matches!(err, RuntimeError::Engine(_)), "{err:?}");
        assert!(matches!(rt.kill("nope", 1), Err(RuntimeError::NotFound(_))));

        let id = run(&rt, &spec("svc2", "sim/svc", &[])).await;
        rt.oom_kill(&id).unwrap();
        let s = status(&rt, &id).await;
        assert_eq!((s.exit_code, s.oom_killed), (Some(137), true));

        let id = run(&rt, &spec("leaky", "leaky:1", &[])).await;
        let begun = Instant::now();
        rt.wait_exit(&id).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(60));
        let s = status(&rt, &id).await;
        assert_eq!((s.exit_code, s.oom_killed), (Some(137), true));
        assert_eq!(rt.counters().kills, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn start_twice_is_one_run_and_restart_is_another() {
        let rt = SimulatedRuntime::new();
        let mut s = spec("svc", "sim/svc", &[]);
        s.ports = vec![port(80, 0, PortProtocol::Tcp)];
        let id = run(&rt, &s).await;
        rt.start(&id).await.unwrap();
        assert_eq!(rt.container(&id).unwrap().times_started, 1);
        assert_eq!(status(&rt, &id).await.ports[0].host_port, 32768);
        rt.kill(&id, 1).unwrap();
        rt.start(&id).await.unwrap();
        let c = rt.container(&id).unwrap();
        assert_eq!(c.times_started, 2);
        assert_eq!(
            (c.status.state, c.status.exit_code),
            (RunState::Running, None)
        );
        // Docker moves on to the next dynamic port.
        assert_eq!(c.status.ports[0].host_port, 32769);
        let counters = rt.counters();
        assert_eq!((counters.creates, counters.starts), (1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn ports_are_allocated_and_checked_like_docker() {
        let rt = SimulatedRuntime::new();
        let mut a = spec("aa", "sim/svc", &[]);
        a.ports = vec![
            port(80, 0, PortProtocol::Tcp),
            port(53, 0, PortProtocol::Udp),
            port(81, 8080, PortProtocol::Tcp),
        ];
        let a = run(&rt, &a).await;
        let ports = status(&rt, &a).await.ports;
        let got: Vec<(u16, u16, PortProtocol)> = ports
            .iter()
            .map(|p| (p.container_port, p.host_port, p.protocol))
            .collect();
        assert_eq!(
            got,
            [
                (53, 32768, PortProtocol::Udp),
                (80, 32768, PortProtocol::Tcp),
                (81, 8080, PortProtocol::Tcp)
            ]
        );
        assert!(ports.iter().all(|p| p.host_ip == "0.0.0.0"));

        // 8080/tcp is taken on all addresses; 8080/udp is not.
        let mut b = spec("bb", "sim/svc", &[]);
        b.ports = vec![port(80, 8080, PortProtocol::Tcp)];
        rt.ensure_image("sim/svc").await.unwrap();
        let b = rt.create(&b).await.unwrap();
        let err = rt.start(&b).await.unwrap_err();
        assert!(matches!(&err, RuntimeError::Engine(m) if m.contains("port is already allocated")));
        let failed = status(&rt, &b).await;
        assert_eq!(failed.state, RunState::Created);
        assert!(failed.error.as_deref().unwrap().contains("8080"));
        let mut udp = spec("udp", "sim/svc", &[]);
        udp.ports = vec![port(80, 8080, PortProtocol::Udp)];
        run(&rt, &udp).await;
        let mut local = spec("local", "sim/svc", &[]);
        local.ports = vec![PortBinding {
            host_ip: "127.0.0.1".into(),
            ..port(80, 8080, PortProtocol::Tcp)
        }];
        let local = rt.create(&local).await.unwrap();
        assert!(rt.start(&local).await.is_err(), "0.0.0.0 covers 127.0.0.1");

        // Two specific addresses do not clash.
        let on_ip = |name: &str, ip: &str| {
            let mut s = spec(name, "sim/svc", &[]);
            s.ports = vec![PortBinding {
                host_ip: ip.into(),
                ..port(80, 9090, PortProtocol::Tcp)
            }];
            s
        };
        run(&rt, &on_ip("ip1", "10.0.0.1")).await;
        run(&rt, &on_ip("ip2", "10.0.0.2")).await;

        // Within one container too.
        let mut twice = spec("twice", "sim/svc", &[]);
        twice.ports = vec![
            port(80, 7070, PortProtocol::Tcp),
            port(81, 7070, PortProtocol::Tcp),
        ];
        let twice = rt.create(&twice).await.unwrap();
        assert!(rt.start(&twice).await.is_err());

        // Released when the holder exits, even by itself.
        rt.stop(&a, Duration::from_secs(1)).await.unwrap();
        rt.start(&b).await.unwrap();
        assert_eq!(status(&rt, &b).await.error, None);
        let mut job = spec("job", "sim/svc", &["exit-after", "1", "0"]);
        job.ports = vec![port(80, 6060, PortProtocol::Tcp)];
        run(&rt, &job).await;
        let mut next = spec("next", "sim/svc", &[]);
        next.ports = vec![port(80, 6060, PortProtocol::Tcp)];
        let next = rt.create(&next).await.unwrap();
        assert!(rt.start(&next).await.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        rt.start(&next).await.unwrap();

        // No publishing on the host network.
        let mut host = spec("host", "sim/svc", &[]);
        host.network_mode = "host".into();
        host.ports = vec![port(80, 8080, PortProtocol::Tcp)];
        let host = run(&rt, &host).await;
        assert!(status(&rt, &host).await.ports.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn dynamic_ports_wrap_around_and_skip_bound_ones() {
        let rt = SimulatedRuntime::new();
        rt.ensure_image("sim/svc").await.unwrap();
        // Hold 32768 with a static binding, then use up the range once.
        let mut holder = spec("holder", "sim/svc", &[]);
        holder.ports = vec![port(80, 32768, PortProtocol::Tcp)];
        run(&rt, &holder).await;
        let mut s = spec("many", "sim/svc", &[]);
        s.ports = vec![port(80, 0, PortProtocol::Tcp)];
        let id = rt.create(&s).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            rt.start(&id).await.unwrap();
            seen.push(status(&rt, &id).await.ports[0].host_port);
            rt.kill(&id, 0).unwrap();
        }
        assert_eq!(seen, [32769, 32770, 32771]);
        {
            let mut st = rt.lock();
            st.next_port.insert(PortProtocol::Tcp, DYNAMIC_PORT_LAST);
        }
        rt.start(&id).await.unwrap();
        assert_eq!(status(&rt, &id).await.ports[0].host_port, DYNAMIC_PORT_LAST);
        rt.kill(&id, 0).unwrap();
        rt.start(&id).await.unwrap();
        assert_eq!(
            status(&rt, &id).await.ports[0].host_port,
            32769,
            "wrapped, skipping 32768"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_follows_the_script() {
        let h = |script: HealthScript| ImageBehavior::default().with_health(script);
        let rt = SimulatedRuntime::builder()
            .image("passing:1", h(HealthScript::Passing))
            .image("failing:1", h(HealthScript::Failing))
            .image(
                "late:1",
                h(HealthScript::HealthyAfter(Duration::from_secs(7))),
            )
            .image(
                "bad:1",
                h(HealthScript::UnhealthyAfter(Duration::from_secs(4))),
            )
            .image("mute:1", h(HealthScript::NeverReports))
            .image(
                "flaky:1",
                h(HealthScript::Timeline(vec![
                    (Duration::from_secs(1), Health::Healthy),
                    (Duration::from_secs(10), Health::Unhealthy),
                    (Duration::from_secs(20), Health::Healthy),
                ])),
            )
            .build();
        // interval 2s, retries 3, start period 5s: failures count from the probe at 6s.
        let make = |name: &str, image: &str| {
            let mut s = spec(name, image, &[]);
            s.health_check = Some(check(2000, 3, 5000));
            s
        };
        let mut ids = Vec::new();
        for (name, image) in [
            ("passing", "passing:1"),
            ("failing", "failing:1"),
            ("late", "late:1"),
            ("bad", "bad:1"),
            ("mute", "mute:1"),
            ("flaky", "flaky:1"),
        ] {
            rt.ensure_image(image).await.unwrap();
            let id = rt.create(&make(name, image)).await.unwrap();
            assert_eq!(
                status(&rt, &id).await.health,
                None,
                "created: no health yet"
            );
            ids.push(id);
        }
        for id in &ids {
            rt.start(id).await.unwrap();
        }
        use Health::{Healthy as H, Starting as S, Unhealthy as U};
        // seconds after start -> passing, failing, late, bad, mute, flaky
        let expected = [
            (0, [S, S, S, S, S, S]),
            (1, [S, S, S, S, S, H]),
            (2, [H, S, S, S, S, H]),
            (4, [H, S, S, U, S, H]),
            (7, [H, S, H, U, S, H]),
            (9, [H, S, H, U, S, H]),
            (10, [H, U, H, U, S, U]),
            (20, [H, U, H, U, S, H]),
        ];
        let begun = Instant::now();
        for (at, want) in expected {
            tokio::time::advance((begun + Duration::from_secs(at)) - Instant::now()).await;
            for (id, want) in ids.iter().zip(want) {
                assert_eq!(status(&rt, id).await.health, Some(want), "at {at}s: {id}");
            }
        }
        // Exited: unhealthy, as Docker reports.
        rt.stop(&ids[0], Duration::from_secs(1)).await.unwrap();
        assert_eq!(status(&rt, &ids[0]).await.health, Some(Health::Unhealthy));

        // No check, or NONE: no health.
        let plain = run(&rt, &spec("plain", "passing:1", &[])).await;
        let mut none = spec("none", "passing:1", &[]);
        none.health_check = Some(HealthCheckSpec {
            test: vec!["NONE".into()],
            ..check(1000, 1, 0)
        });
        let none = run(&rt, &none).await;
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(status(&rt, &plain).await.health, None);
        assert_eq!(status(&rt, &none).await.health, None);
    }

    #[tokio::test(start_paused = true)]
    async fn health_defaults_follow_docker() {
        let rt = SimulatedRuntime::builder()
            .image(
                "failing:1",
                ImageBehavior::default().with_health(HealthScript::Failing),
            )
            .build();
        // Zero interval and retries: Docker's 30s and 3.
        let mut s = spec("ff", "failing:1", &[]);
        s.health_check = Some(check(0, 0, 0));
        let id = run(&rt, &s).await;
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(status(&rt, &id).await.health, Some(Health::Starting));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(status(&rt, &id).await.health, Some(Health::Unhealthy));
    }

    #[tokio::test]
    async fn create_validates_like_docker() {
        let rt = SimulatedRuntime::builder()
            .local_image("app:1", ImageBehavior::default())
            .local_image("nope:1", ImageBehavior::default().failing_create())
            .build();
        for name in ["x", "bad name", "-dash", "ok/slash"] {
            let err = rt.create(&spec(name, "app:1", &[])).await.unwrap_err();
            assert!(matches!(err, RuntimeError::Engine(_)), "{name}: {err:?}");
        }
        let with_memory = |limit: Option<i64>, reservation: Option<i64>| ContainerSpec {
            memory_limit_mib: limit,
            memory_reservation_mib: reservation,
            ..spec("mem", "app:1", &[])
        };
        for (limit, reservation) in [(Some(-1), None), (None, Some(-5)), (Some(i64::MAX), None)] {
            let err = rt
                .create(&with_memory(limit, reservation))
                .await
                .unwrap_err();
            assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err:?}");
        }
        for (limit, reservation) in [(Some(4), None), (Some(64), Some(128))] {
            let err = rt
                .create(&with_memory(limit, reservation))
                .await
                .unwrap_err();
            assert!(matches!(err, RuntimeError::Engine(_)), "{err:?}");
        }
        rt.create(&with_memory(Some(128), Some(64))).await.unwrap();
        let err = rt.create(&spec("nope", "nope:1", &[])).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Engine(_)), "{err:?}");

        // A blank name gets one; names may carry Docker's leading slash.
        let id = rt.create(&spec("", "app:1", &[])).await.unwrap();
        assert!(!status(&rt, &id).await.name.is_empty());
        let id = rt.create(&spec("/slashed", "app:1", &[])).await.unwrap();
        assert_eq!(status(&rt, &id).await.name, "slashed");
        assert_eq!(status(&rt, "/slashed").await.id, id);
        assert!(rt.create(&spec("slashed", "app:1", &[])).await.is_err());
    }

    #[tokio::test]
    async fn containers_are_found_by_id_name_or_prefix() {
        let rt = SimulatedRuntime::builder().id_seed(42).build();
        let id = run(&rt, &spec("web", "sim/web", &[])).await;
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(status(&rt, "web").await.id, id);
        assert_eq!(status(&rt, &id[..12]).await.id, id);
        assert!(matches!(
            rt.inspect("zzz").await,
            Err(RuntimeError::NotFound(_))
        ));

        // Seeded ids repeat; unseeded runtimes do not share ids.
        let again = SimulatedRuntime::builder().id_seed(42).build();
        assert_eq!(run(&again, &spec("web", "sim/web", &[])).await, id);
        let other = SimulatedRuntime::new();
        assert_ne!(run(&other, &spec("web", "sim/web", &[])).await, id);
    }

    #[tokio::test]
    async fn set_behavior_applies_to_later_containers() {
        let rt = SimulatedRuntime::builder()
            .local_image("app:1", ImageBehavior::default())
            .build();
        let before = run(&rt, &spec("before", "app:1", &[])).await;
        rt.set_behavior("app:1", ImageBehavior::exits_after(Duration::ZERO, 4));
        let after = run(&rt, &spec("after", "app:1", &[])).await;
        rt.wait_exit(&after).await.unwrap();
        assert_eq!(status(&rt, &after).await.exit_code, Some(4));
        assert_eq!(status(&rt, &before).await.state, RunState::Running);
        rt.set_behavior("app:1", ImageBehavior::default().failing_create());
        assert!(rt.create(&spec("later", "app:1", &[])).await.is_err());
    }

    #[tokio::test]
    async fn containers_lists_everything_with_specs() {
        let rt = SimulatedRuntime::new();
        let mut a = spec("aa", "sim/a", &[]);
        a.env = vec![("K".into(), "V".into())];
        a.memory_limit_mib = Some(256);
        let a = run(&rt, &a).await;
        rt.ensure_image("sim/b").await.unwrap();
        let b = rt.create(&spec("bb", "sim/b", &[])).await.unwrap();
        let all = rt.containers();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].id.as_str(), all[1].id.as_str()),
            (a.as_str(), b.as_str())
        );
        assert_eq!(all[0].spec.env, [("K".to_string(), "V".to_string())]);
        assert_eq!(all[0].spec.memory_limit_mib, Some(256));
        assert_eq!(all[0].status.state, RunState::Running);
        assert_eq!((all[0].times_started, all[1].times_started), (1, 0));
        rt.remove(&a).await.unwrap();
        assert_eq!(rt.containers().len(), 1);
        assert!(rt.container(&a).is_none());
    }

    /// Ten thousand containers, each with a label and a dynamic port, through their whole
    /// life, in one runtime.
    #[tokio::test(start_paused = true)]
    async fn ten_thousand_containers() {
        const N: usize = 10_000;
        let rt = SimulatedRuntime::new();
        rt.ensure_image("sim/svc").await.unwrap();
        let mut ids = Vec::with_capacity(N);
        for i in 0..N {
            let mut s = spec(&format!("cc{i}"), "sim/svc", &[]);
            s.labels.insert("group".into(), (i % 10).to_string());
            s.ports = vec![port(80, 0, PortProtocol::Tcp)];
            if i % 2 == 0 {
                s.command = Some(vec![
                    "exit-after".into(),
                    format!("{}", i % 100),
                    "0".into(),
                ]);
            }
            let id = rt.create(&s).await.unwrap();
            rt.start(&id).await.unwrap();
            ids.push(id);
        }
        assert_eq!(rt.list_labelled("group", "3").await.unwrap().len(), N / 10);
        tokio::time::advance(Duration::from_secs(100)).await;
        let exited = rt
            .containers()
            .iter()
            .filter(|c| c.status.state == RunState::Exited)
            .count();
        assert_eq!(exited, N / 2);
        for id in &ids {
            rt.stop(id, Duration::from_secs(10)).await.unwrap();
            rt.remove(id).await.unwrap();
        }
        assert!(rt.containers().is_empty());
        let st = rt.lock();
        assert!(st.bound.is_empty() && st.due.is_empty() && st.names.is_empty());
    }
}

//! berth's background jobs, as reconcile loops in the model of kube-runtime.
//!
//! - A [`Reconciler`] says which store prefixes it cares about, how a change maps to the
//!   objects it owns, how to list them all, and how to bring one object to its desired
//!   state. It is level-triggered and idempotent: it reads the current state, never the
//!   event, so a missed, duplicated or coalesced event is harmless.
//! - A [`Controller`] drives one reconciler: list, then watch from the revision before the
//!   list; re-list whenever the watch breaks and every `resync`; reconcile each queued
//!   object with bounded concurrency, never one object twice at once, with requeues and
//!   error backoff.
//! - [`LeaderElection`] holds a lease-backed key in the store; [`ControllerManager`] runs
//!   the controllers only while this server holds it.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use berth_controllers::*;
//! use berth_store::{Event, ReadExt, Store, Txn};
//!
//! /// Keeps `dst/<name>` equal to twice `src/<name>`.
//! struct Mirror(Arc<dyn Store>);
//!
//! #[async_trait::async_trait]
//! impl Reconciler for Mirror {
//!     fn name(&self) -> &'static str { "mirror" }
//!     fn watches(&self) -> Vec<String> { vec!["src/".into()] }
//!     fn map_event(&self, event: &Event) -> Vec<ObjectKey> {
//!         event.key().strip_prefix("src/").map(ObjectKey::from).into_iter().collect()
//!     }
//!     async fn list(&self) -> Result<Vec<ObjectKey>, ReconcileError> {
//!         let all = self.0.scan_json::<i64>("src/").await?;
//!         Ok(all.into_iter().map(|(k, _, _)| ObjectKey::new(&k["src/".len()..])).collect())
//!     }
//!     async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
//!         let dst = format!("dst/{key}");
//!         let want = self.0.get_json::<i64>(&format!("src/{key}")).await?;
//!         let have = self.0.get_json::<i64>(&dst).await?;
//!         let read = have.as_ref().map(|(_, rev)| *rev);
//!         let txn = Txn::new().require_unchanged(&dst, read); // a race is a Conflict: retried
//!         match want {
//!             Some((n, _)) if have.map(|(h, _)| h) != Some(n * 2) => {
//!                 self.0.commit(txn.put_json(&dst, &(n * 2))).await?;
//!             }
//!             None if read.is_some() => {
//!                 self.0.commit(txn.delete(&dst)).await?;
//!             }
//!             _ => {}
//!         }
//!         Ok(Action::await_change())
//!     }
//! }
//!
//! # async fn wire(store: Arc<dyn Store>, shutdown: CancellationToken) {
//! let election = LeaderElection::new(store.clone(), "leader/controllers", "server-1", Duration::from_secs(10));
//! let controller = Controller::new(Mirror(store.clone()), store.clone(), ControllerConfig::default());
//! ControllerManager::new(election).with(controller).run(shutdown).await;
//! # }
//! ```

mod controller;
pub mod gc;
mod leader;
pub mod liveness;
mod manager;
mod queue;
mod reconciler;
pub mod services;

pub use controller::{Controller, ControllerConfig, ControllerStats, StatsSnapshot};
pub use leader::LeaderElection;
pub use manager::ControllerManager;
pub use reconciler::{default_backoff, Action, ObjectKey, ReconcileError, Reconciler};
/// What `run` methods stop on.
pub use tokio_util::sync::CancellationToken;

#[cfg(test)]
mod tests;

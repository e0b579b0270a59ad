//! Runs a set of controllers only while this server is the leader.

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::controller::AbortOnDrop;
use crate::{Controller, LeaderElection};

/// Holds the controllers of one server and the election that decides when they run.
pub struct ControllerManager {
    election: LeaderElection,
    controllers: Vec<Controller>,
}

impl ControllerManager {
    pub fn new(election: LeaderElection) -> Self {
        Self {
            election,
            controllers: Vec::new(),
        }
    }

    pub fn with(mut self, controller: Controller) -> Self {
        self.controllers.push(controller);
        self
    }

    pub fn add(&mut self, controller: Controller) {
        self.controllers.push(controller);
    }

    /// Whether this server leads now (and every change of that).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.election.subscribe()
    }

    /// Campaigns; starts every controller (fresh: each lists everything) when leadership
    /// is gained and cancels them when it is lost, until `shutdown`. On shutdown the
    /// controllers stop *before* the lease is revoked, so two leaders never overlap.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut leader = self.election.subscribe();
        let election_stop = CancellationToken::new();
        let mut election = AbortOnDrop(tokio::spawn(self.election.run(election_stop.clone())));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                gained = leader.wait_for(|l| *l) => if gained.is_err() { break },
            }
            let term = shutdown.child_token();
            let mut running = JoinSet::new();
            for controller in &self.controllers {
                running.spawn(controller.clone().run(term.clone()));
            }
            tracing::info!(
                controllers = self.controllers.len(),
                "leading: controllers started"
            );
            // While leading, the election only ever sends the end of the term; reacting to
            // the send rather than the value also catches a lost-and-regained term.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = leader.changed() => {}
            }
            term.cancel();
            while running.join_next().await.is_some() {}
            tracing::info!("controllers stopped");
        }
        election_stop.cancel();
        if let Err(e) = (&mut election.0).await {
            tracing::error!("leader election task failed: {e}");
        }
    }
}

//! berth's typed domain: what the control plane, its controllers and the agent share.
//!
//! Statuses are ordered enums, names and ids are newtypes, and every stored record keeps the
//! desired state (written by the API and controllers) apart from the observed state (written
//! from agent reports). Wire spellings appear only in the API and agent-protocol layers,
//! which call `as_str`/`parse`.

pub mod arn;
pub mod clock;
mod error;
pub mod host_access;
pub mod ids;
pub mod records;
pub mod resources;
pub mod status;

pub use arn::{Arn, ArnBuilder, ResourceKind};
pub use clock::{Clock, IdGen, ManualClock, RandomIds, SequentialIds, SystemClock, Timestamp};
pub use error::{Error, ErrorKind, Result};

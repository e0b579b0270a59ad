//! CPU, memory and port accounting. Quantities are unsigned and every sum saturates, so no
//! input can make free capacity appear out of nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::status::{Protocol, TaskStatus};

/// What one task holds on its container instance until it is STOPPED.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// CPU units (1024 = one vCPU).
    pub cpu: u64,
    /// MiB.
    pub memory: u64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
}

impl Reservation {
    pub fn ports(&self, protocol: Protocol) -> &BTreeSet<u16> {
        match protocol {
            Protocol::Tcp => &self.tcp_ports,
            Protocol::Udp => &self.udp_ports,
        }
    }
}

/// What a container instance offers: totals, and host ports kept for the host itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceResources {
    pub cpu: u64,
    pub memory: u64,
    /// Ports reserved on the host (not for tasks).
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
}

/// What the live tasks on one container instance hold, kept in the store beside the
/// instance and updated in the same transaction as every task that starts or stops there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUsage {
    pub cpu: u64,
    pub memory: u64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    /// Tasks that are not yet RUNNING (PROVISIONING..ACTIVATING).
    pub pending: u32,
    /// Tasks RUNNING or on their way down but not yet STOPPED.
    pub running: u32,
    /// Live tasks per task group (`family:web`, `service:api`), for distinctInstance,
    /// spread and `task:group` queries.
    pub groups: BTreeMap<String, u32>,
}

impl InstanceUsage {
    pub fn tasks(&self) -> u32 {
        self.pending.saturating_add(self.running)
    }

    /// A task placed here (counted as pending until it runs).
    pub fn add(&mut self, r: &Reservation, group: &str) {
        self.cpu = self.cpu.saturating_add(r.cpu);
        self.memory = self.memory.saturating_add(r.memory);
        self.tcp_ports.extend(&r.tcp_ports);
        self.udp_ports.extend(&r.udp_ports);
        self.pending = self.pending.saturating_add(1);
        *self.groups.entry(group.to_string()).or_default() += 1;
    }

    /// A task here moved from pending to running.
    pub fn started(&mut self) {
        self.pending = self.pending.saturating_sub(1);
        self.running = self.running.saturating_add(1);
    }

    /// A task here stopped; `was_running` says which counter held it.
    pub fn remove(&mut self, r: &Reservation, group: &str, was_running: bool) {
        self.cpu = self.cpu.saturating_sub(r.cpu);
        self.memory = self.memory.saturating_sub(r.memory);
        for p in &r.tcp_ports {
            self.tcp_ports.remove(p);
        }
        for p in &r.udp_ports {
            self.udp_ports.remove(p);
        }
        if was_running {
            self.running = self.running.saturating_sub(1);
        } else {
            self.pending = self.pending.saturating_sub(1);
        }
        if let Some(n) = self.groups.get_mut(group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.groups.remove(group);
            }
        }
    }

    /// Follows one task from `from` to `to`: running once it reaches RUNNING, released
    /// once it is STOPPED. Placement itself is [`add`](Self::add).
    pub fn transition(&mut self, r: &Reservation, group: &str, from: TaskStatus, to: TaskStatus) {
        if from.is_terminal() || from == to {
            return;
        }
        if to.is_terminal() {
            self.remove(r, group, from >= TaskStatus::Running);
        } else if from < TaskStatus::Running && to >= TaskStatus::Running {
            self.started();
        }
    }

    /// Remaining = registered − held; port sets grow instead (ports in use).
    pub fn remaining(&self, registered: &InstanceResources) -> InstanceResources {
        InstanceResources {
            cpu: registered.cpu.saturating_sub(self.cpu),
            memory: registered.memory.saturating_sub(self.memory),
            tcp_ports: registered
                .tcp_ports
                .union(&self.tcp_ports)
                .copied()
                .collect(),
            udp_ports: registered
                .udp_ports
                .union(&self.udp_ports)
                .copied()
                .collect(),
        }
    }
}

/// Task-level `cpu`/`memory`: an integer, or ECS's unit spellings ("1 vCPU", "0.5 vcpu",
/// "2 GB", "512 MiB"). Returns CPU units or MiB.
pub fn parse_task_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    let scaled = |n: &str, factor: f64| -> Option<u64> {
        let x: f64 = n.trim().parse().ok()?;
        (x.is_finite() && x > 0.0 && x * factor <= u32::MAX as f64).then_some((x * factor) as u64)
    };
    let parsed = if let Some(n) = lower.strip_suffix("vcpu") {
        scaled(n, 1024.0)
    } else if let Some(n) = lower.strip_suffix("gb") {
        scaled(n, 1024.0)
    } else if let Some(n) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix("mb"))
    {
        scaled(n, 1.0)
    } else {
        v.parse::<u64>().ok()
    };
    parsed.filter(|n| *n > 0 && *n <= u64::from(u32::MAX))
}

/// MiB to bytes for the container engine, refusing what does not fit.
pub fn mib_to_bytes(mib: u64) -> Option<i64> {
    mib.checked_mul(1024 * 1024)
        .and_then(|b| i64::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation(cpu: u64, memory: u64, tcp: &[u16]) -> Reservation {
        Reservation {
            cpu,
            memory,
            tcp_ports: tcp.iter().copied().collect(),
            udp_ports: BTreeSet::new(),
        }
    }

    #[test]
    fn usage_adds_and_removes_symmetrically() {
        let registered = InstanceResources {
            cpu: 1024,
            memory: 1000,
            tcp_ports: [22].into(),
            udp_ports: BTreeSet::new(),
        };
        let mut usage = InstanceUsage::default();
        let r = reservation(100, 300, &[8080]);
        usage.add(&r, "family:web");
        usage.add(&r, "family:web");
        usage.started();
        assert_eq!((usage.pending, usage.running), (1, 1));
        assert_eq!(usage.groups["family:web"], 2);
        let left = usage.remaining(&registered);
        assert_eq!((left.cpu, left.memory), (824, 400));
        assert_eq!(left.tcp_ports, [22, 8080].into());
        usage.remove(&r, "family:web", true);
        usage.remove(&r, "family:web", false);
        assert_eq!(usage, InstanceUsage::default());
    }

    #[test]
    fn nothing_goes_negative_or_wraps() {
        let mut usage = InstanceUsage::default();
        usage.remove(&reservation(5, 5, &[]), "g", true);
        assert_eq!(usage.cpu, 0);
        usage.add(&reservation(u64::MAX, u64::MAX, &[]), "g");
        usage.add(&reservation(u64::MAX, 1, &[]), "g");
        assert_eq!(usage.cpu, u64::MAX);
        let left = usage.remaining(&InstanceResources {
            cpu: 10,
            memory: 10,
            ..Default::default()
        });
        assert_eq!((left.cpu, left.memory), (0, 0));
    }

    #[test]
    fn task_sizes() {
        assert_eq!(parse_task_size("512"), Some(512));
        assert_eq!(parse_task_size("1 vCPU"), Some(1024));
        assert_eq!(parse_task_size(".5 vcpu"), Some(512));
        assert_eq!(parse_task_size("2 GB"), Some(2048));
        assert_eq!(parse_task_size("lots"), None);
        assert_eq!(parse_task_size("-1"), None);
        assert_eq!(parse_task_size("0"), None);
        assert_eq!(parse_task_size("99999999999 GB"), None);
        assert_eq!(mib_to_bytes(1), Some(1 << 20));
        assert_eq!(mib_to_bytes(u64::MAX), None);
    }
}

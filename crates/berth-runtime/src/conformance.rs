//! The behaviour every [`ContainerRuntime`] must show, as one suite each implementation runs
//! (after arrow-rs `object_store/src/integration.rs`): the Docker driver in
//! `tests/docker_conformance.rs`, the simulated runtime in its unit tests.
//!
//! Each `pub async fn` checks one area and panics on a difference. It creates containers with
//! names unique to the process and run, labels them with [`RUN_LABEL`], and removes every
//! container it created when it ends, whether it passed or panicked. The runtime under test
//! supplies the images and the commands that make a container run or exit
//! ([`TestImages`]); the suite needs nothing else.
//!
//! Waiting is by awaiting the runtime (`wait_exit`) or by polling `inspect` until a deadline,
//! in tokio time: under `tokio::time::pause()` a simulated runtime goes through it in no real
//! time.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::{
    ContainerRuntime, ContainerSpec, ContainerStatus, GroupLimits, Health, HealthCheckSpec, Mount,
    MountSource, PortBinding, PortProtocol, RunState, RuntimeError, VolumeSpec,
};

/// The label every container of the suite carries; its value identifies the test run (so
/// leftovers of a killed run can be found: `docker ps -aq --filter label=berth.conformance.run`).
pub const RUN_LABEL: &str = "berth.conformance.run";

/// How long the suite waits for something the runtime should do promptly.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the suite runs: images and the commands that give a container a known behaviour.
#[derive(Debug, Clone)]
pub struct TestImages {
    /// An image with a command that runs until stopped and exits promptly on SIGTERM.
    pub long_running_image: String,
    pub long_running_command: Vec<String>,
    /// A health check test (Docker form, e.g. `["CMD-SHELL", "..."]`) for the long-running
    /// command that passes once it handles SIGTERM. Until then a signal may be lost (a shell
    /// as PID 1 ignores SIGTERM before its `trap` runs), so the suite waits for it before
    /// stopping a container and expecting a prompt exit.
    pub long_running_ready_check: Vec<String>,
    /// A command for `long_running_image` that runs until stopped and ignores SIGTERM, so
    /// that `stop` must kill it once its timeout has elapsed.
    pub ignores_sigterm_command: Vec<String>,
    /// An image whose command chooses how it ends.
    pub exiting_image: String,
    /// The command for `exiting_image` that exits at once with the given code.
    pub exit_with: fn(i64) -> Vec<String>,
    /// The command for `exiting_image` that exits at once with 0 if the environment variable
    /// `name` is `value`, and with another code if not.
    pub exit_unless_env: fn(name: &str, value: &str) -> Vec<String>,
}

/// Runs every check of the suite, one after the other.
pub async fn run_all(rt: &dyn ContainerRuntime, images: &TestImages) {
    host_info(rt, images).await;
    images_are_pulled_or_refused(rt, images).await;
    create_start_inspect(rt, images).await;
    port_bindings(rt, images).await;
    stop_with_timeout(rt, images).await;
    wait_exit(rt, images).await;
    exit_code(rt, images).await;
    remove(rt, images).await;
    list_labelled(rt, images).await;
    duplicate_name(rt, images).await;
    health_check(rt, images).await;
    volumes(rt, images).await;
    timestamps_and_stats(rt, images).await;
    shared_namespaces_and_groups(rt, images).await;
}

/// Volumes: created with labels (again: the existing one), inspected, listed by label,
/// mounted by a container, removed once unused (again: fine), then gone.
pub async fn volumes(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "volumes");
    let name = s.name("vol");
    s.run(async {
        s.ensure(images).await;
        let spec = VolumeSpec {
            name: name.clone(),
            driver: None,
            driver_opts: Default::default(),
            labels: [(RUN_LABEL.to_string(), run_id().to_string())].into(),
        };
        let created = rt.create_volume(&spec).await.expect("create_volume");
        assert_eq!(created.name, name);
        assert_eq!(created.driver, "local");
        assert_eq!(
            created.labels.get(RUN_LABEL).map(String::as_str),
            Some(run_id())
        );
        let again = rt.create_volume(&spec).await.expect("create_volume again");
        assert_eq!(again.name, name);
        assert_eq!(
            rt.inspect_volume(&name).await.expect("inspect_volume"),
            Some(created)
        );
        let listed = rt
            .list_volumes_labelled(RUN_LABEL, run_id())
            .await
            .expect("list_volumes_labelled");
        assert!(listed.iter().any(|v| v.name == name), "{listed:?}");

        let mut user = s.spec("mounts", &images.exiting_image, (images.exit_with)(0));
        user.mounts = vec![Mount {
            source: MountSource::Volume(name.clone()),
            target: "/data".into(),
            read_only: true,
        }];
        let id = s.started(user).await;
        s.exited(&id).await;
        rt.remove(&id).await.expect("remove");
        rt.remove_volume(&name).await.expect("remove_volume");
        assert_eq!(
            rt.inspect_volume(&name).await.expect("inspect_volume"),
            None
        );
        rt.remove_volume(&name).await.expect("remove_volume again");
    })
    .await;
    let _ = rt.remove_volume(&name).await;
}

/// Containers report when they were created, started and finished; a running one has
/// stats in the engine's format.
pub async fn timestamps_and_stats(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "timestamps_and_stats");
    s.run(async {
        s.ensure(images).await;
        let spec = s.spec(
            "timed",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        let id = s.create(&spec).await.expect("create");
        let created = rt.inspect(&id).await.expect("inspect");
        assert!(created.created_at.is_some(), "{created:?}");
        assert_eq!((created.started_at, created.finished_at), (None, None));
        assert_eq!(created.image, spec.image);
        rt.start(&id).await.expect("start");
        let running = rt.inspect(&id).await.expect("inspect");
        assert!(running.started_at >= running.created_at, "{running:?}");
        assert_eq!(running.finished_at, None);
        assert!(
            running.ip_address.is_some(),
            "a bridge container has an address: {running:?}"
        );
        assert!(
            rt.bridge_gateway().await.expect("bridge_gateway").is_some(),
            "the engine's default bridge has a gateway"
        );
        let stats = rt.stats(&id).await.expect("stats");
        assert!(stats["memory_stats"].is_object(), "{stats}");
        assert!(stats["cpu_stats"].is_object(), "{stats}");
        rt.stop(&id, Duration::from_secs(10)).await.expect("stop");
        let stopped = rt.inspect(&id).await.expect("inspect");
        assert!(stopped.finished_at >= stopped.started_at, "{stopped:?}");
        assert!(stopped.finished_at.is_some(), "{stopped:?}");
    })
    .await;
}

/// The pause image holds namespaces other containers join (joining a container that is
/// not running fails at start); a group's containers run under it, and the group goes once
/// they are gone.
pub async fn shared_namespaces_and_groups(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "shared_namespaces_and_groups");
    let group = format!("berth/{}", s.name("group"));
    s.run(async {
        s.ensure(images).await;
        let parent = rt
            .create_group(
                &group,
                &GroupLimits {
                    cpu_units: Some(512),
                    memory_mib: Some(64),
                },
            )
            .await
            .expect("create_group");
        let pause_image = rt.ensure_pause_image().await.expect("ensure_pause_image");
        let mut pause = s.spec("pause", &pause_image, vec![]);
        pause.command = None;
        pause.network_mode = "none".into();
        pause.ipc_mode = Some("shareable".into());
        pause.cgroup_parent.clone_from(&parent);
        let pause_id = s.create(&pause).await.expect("create pause");

        let mut member = s.spec(
            "member",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        member.pid_mode = Some(format!("container:{pause_id}"));
        member.ipc_mode = Some(format!("container:{pause_id}"));
        member.cgroup_parent.clone_from(&parent);
        let member_id = s.create(&member).await.expect("create member");
        assert!(
            rt.start(&member_id).await.is_err(),
            "joining the namespaces of a container that is not running must fail"
        );

        rt.start(&pause_id).await.expect("start pause");
        assert_eq!(
            rt.inspect(&pause_id).await.expect("inspect").state,
            RunState::Running
        );
        rt.start(&member_id).await.expect("start member");
        assert_eq!(
            rt.inspect(&member_id).await.expect("inspect").state,
            RunState::Running
        );

        rt.stop(&member_id, Duration::from_secs(10))
            .await
            .expect("stop member");
        // The pause program ignores SIGTERM: it goes at once with SIGKILL.
        rt.stop(&pause_id, Duration::ZERO)
            .await
            .expect("stop pause");
        assert_eq!(
            rt.inspect(&pause_id).await.expect("inspect").state,
            RunState::Exited
        );
        rt.remove(&member_id).await.expect("remove");
        rt.remove(&pause_id).await.expect("remove");
        rt.remove_group(&group).await.expect("remove_group");
    })
    .await;
    let _ = rt.remove_group(&group).await;
}

/// The host reports cpus, memory and an engine version.
pub async fn host_info(rt: &dyn ContainerRuntime, _images: &TestImages) {
    let host = rt.host_info().await.expect("host_info");
    assert!(host.cpus >= 1, "{host:?}");
    assert!(host.memory_bytes > 0, "{host:?}");
    assert!(!host.engine_version.is_empty(), "{host:?}");
}

/// `ensure_image` of a present image succeeds (twice); an image that cannot be had is a
/// `RuntimeError::Image`, from `ensure_image` and from `create`.
pub async fn images_are_pulled_or_refused(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "images");
    s.run(async {
        for image in [&images.long_running_image, &images.exiting_image] {
            rt.ensure_image(image).await.expect("ensure_image");
            rt.ensure_image(image).await.expect("ensure_image, again");
        }
        // Upper case makes it an invalid reference: refused without asking a registry.
        let err = rt
            .ensure_image("berth-conformance/No-Such-Image:never")
            .await
            .expect_err("an unknown image cannot be pulled");
        assert!(matches!(err, RuntimeError::Image { .. }), "{err:?}");

        let mut spec = s.spec("absent", &images.exiting_image, (images.exit_with)(0));
        spec.image = "berth-conformance/absent-image:never".into();
        let err = s.create(&spec).await.expect_err("no such image");
        assert!(matches!(err, RuntimeError::Image { .. }), "{err:?}");
    })
    .await;
}

/// A created container is `Created`; once started, `Running` with its name and labels, no
/// exit code, no health (no check), not OOM-killed; its environment is what the spec says;
/// starting it again does nothing.
pub async fn create_start_inspect(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "create_start_inspect");
    s.run(async {
        s.ensure(images).await;
        let mut spec = s.spec(
            "main",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        spec.labels
            .insert("berth.test/purpose".into(), "create-start-inspect".into());
        spec.env = vec![("BERTH_CONFORMANCE".into(), "one".into())];
        let id = s.create(&spec).await.expect("create");
        assert!(!id.is_empty());

        let created = rt.inspect(&id).await.expect("inspect created");
        assert_eq!(created.id, id);
        assert_eq!(created.name, spec.name);
        assert_eq!(created.state, RunState::Created);
        assert_eq!(created.exit_code, None);
        assert_eq!(created.health, None);
        assert!(created.ports.is_empty(), "{created:?}");

        rt.start(&id).await.expect("start");
        let running = rt.inspect(&id).await.expect("inspect running");
        assert_eq!(running.id, id);
        assert_eq!(running.name, spec.name);
        assert_eq!(running.state, RunState::Running);
        assert_eq!(running.exit_code, None);
        assert_eq!(running.health, None);
        assert!(!running.oom_killed);
        assert!(running.image_digest.is_some());
        for (k, v) in &spec.labels {
            assert_eq!(running.labels.get(k), Some(v), "label {k}: {running:?}");
        }

        rt.start(&id).await.expect("start of a running container");
        assert_eq!(
            rt.inspect(&id).await.expect("inspect").state,
            RunState::Running
        );
        // Looked up by name as well as by id.
        assert_eq!(rt.inspect(&spec.name).await.expect("by name").id, id);

        // The environment reaches the container: it checks it and reports by exit code.
        for (value, expect_zero) in [("one", true), ("two", false)] {
            let mut probe = s.spec(
                &format!("env-{value}"),
                &images.exiting_image,
                (images.exit_unless_env)("BERTH_CONFORMANCE", value),
            );
            probe.env = vec![
                ("BERTH_OTHER".into(), "x".into()),
                ("BERTH_CONFORMANCE".into(), "one".into()),
            ];
            let probe_id = s.create(&probe).await.expect("create env probe");
            rt.start(&probe_id).await.expect("start env probe");
            let done = s.exited(&probe_id).await;
            assert_eq!(
                done.exit_code == Some(0),
                expect_zero,
                "env check for {value}: {done:?}"
            );
        }
    })
    .await;
}

/// Dynamic and static host ports are bound while running and reported; a static host port
/// bound by another running container makes `start` fail; no ports once exited.
pub async fn port_bindings(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "port_bindings");
    s.run(async {
        s.ensure(images).await;
        let static_port = free_host_port();
        let binding = |container_port, host_port, protocol| PortBinding {
            container_port,
            host_port,
            protocol,
            host_ip: String::new(),
        };
        let mut spec = s.spec(
            "ports",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        spec.ports = vec![
            binding(80, 0, PortProtocol::Tcp),
            binding(81, static_port, PortProtocol::Tcp),
            binding(53, 0, PortProtocol::Udp),
        ];
        let id = s.started_ready(spec, images).await;
        let status = rt.inspect(&id).await.expect("inspect");
        assert_eq!(status.ports.len(), 3, "{:?}", status.ports);
        let port = |container_port, protocol| {
            status
                .ports
                .iter()
                .find(|p| p.container_port == container_port && p.protocol == protocol)
                .unwrap_or_else(|| panic!("{container_port}: {:?}", status.ports))
        };
        let dynamic = port(80, PortProtocol::Tcp);
        assert!(dynamic.host_port >= 1024, "{dynamic:?}");
        assert_eq!(dynamic.host_ip, "0.0.0.0");
        let fixed = port(81, PortProtocol::Tcp);
        assert_eq!(fixed.host_port, static_port);
        assert_eq!(fixed.host_ip, "0.0.0.0");
        assert!(port(53, PortProtocol::Udp).host_port >= 1024);

        // The static port is taken: a second container cannot start.
        let mut clash = s.spec(
            "clash",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        clash.ports = vec![binding(8080, static_port, PortProtocol::Tcp)];
        let clash_id = s.create(&clash).await.expect("create clash");
        let err = rt
            .start(&clash_id)
            .await
            .expect_err("static host port already bound");
        assert!(matches!(err, RuntimeError::Engine(_)), "{err:?}");
        let clash_status = rt.inspect(&clash_id).await.expect("inspect clash");
        assert_ne!(clash_status.state, RunState::Running, "{clash_status:?}");
        assert!(clash_status.ports.is_empty(), "{clash_status:?}");

        rt.stop(&id, Duration::from_secs(10)).await.expect("stop");
        let stopped = rt.inspect(&id).await.expect("inspect stopped");
        assert_eq!(stopped.state, RunState::Exited);
        assert!(stopped.ports.is_empty(), "{stopped:?}");

        // Released: now the second container can have it.
        rt.start(&clash_id).await.expect("start clash once free");
        let clash_status = rt.inspect(&clash_id).await.expect("inspect clash");
        assert_eq!(clash_status.state, RunState::Running);
        assert_eq!(clash_status.ports.len(), 1, "{clash_status:?}");
        assert_eq!(clash_status.ports[0].host_port, static_port);
        assert_eq!(clash_status.error, None);
    })
    .await;
}

/// `stop` of a container that exits on SIGTERM ends it promptly, not by a kill; of one that
/// ignores SIGTERM, kills it (137) once the timeout has elapsed. Stopping a stopped or
/// never-started container succeeds and changes nothing.
pub async fn stop_with_timeout(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "stop_with_timeout");
    s.run(async {
        s.ensure(images).await;
        let graceful = s
            .started_ready(
                s.spec(
                    "graceful",
                    &images.long_running_image,
                    images.long_running_command.clone(),
                ),
                images,
            )
            .await;
        let timeout = Duration::from_secs(20);
        let begun = Instant::now();
        rt.stop(&graceful, timeout).await.expect("stop");
        assert!(begun.elapsed() < timeout, "took the whole timeout");
        let status = rt.inspect(&graceful).await.expect("inspect");
        assert_eq!(status.state, RunState::Exited);
        let code = status.exit_code.expect("an exit code");
        assert_ne!(code, 137, "killed, though it exits on SIGTERM: {status:?}");
        assert!(!status.oom_killed);
        rt.stop(&graceful, timeout).await.expect("stop again");
        assert_eq!(
            rt.inspect(&graceful).await.expect("inspect").exit_code,
            Some(code)
        );

        let stubborn = s
            .started(s.spec(
                "stubborn",
                &images.long_running_image,
                images.ignores_sigterm_command.clone(),
            ))
            .await;
        let timeout = Duration::from_secs(1);
        let begun = Instant::now();
        rt.stop(&stubborn, timeout).await.expect("stop stubborn");
        assert!(
            begun.elapsed() >= timeout,
            "killed before its timeout: {:?}",
            begun.elapsed()
        );
        let status = rt.inspect(&stubborn).await.expect("inspect stubborn");
        assert_eq!(status.state, RunState::Exited);
        assert_eq!(status.exit_code, Some(137), "{status:?}");

        let never = s
            .create(&s.spec(
                "never-started",
                &images.long_running_image,
                images.long_running_command.clone(),
            ))
            .await
            .expect("create");
        rt.stop(&never, timeout)
            .await
            .expect("stop of a created one");
        assert_eq!(
            rt.inspect(&never).await.expect("inspect").state,
            RunState::Created
        );
    })
    .await;
}

/// `wait_exit` stays pending while the container runs and resolves when it stops; it
/// resolves at once for a container that is not running, and fails for an unknown one.
pub async fn wait_exit(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "wait_exit");
    s.run(async {
        s.ensure(images).await;
        let spec = s.spec(
            "waited",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        let id = s.started_ready(spec, images).await;
        let pending = tokio::time::timeout(Duration::from_millis(300), rt.wait_exit(&id)).await;
        assert!(pending.is_err(), "wait_exit resolved while running");

        let (waited, stopped) = tokio::join!(
            tokio::time::timeout(PATIENCE, rt.wait_exit(&id)),
            rt.stop(&id, Duration::from_secs(10)),
        );
        stopped.expect("stop");
        waited
            .expect("wait_exit resolves on exit")
            .expect("wait_exit");
        assert_eq!(
            rt.inspect(&id).await.expect("inspect").state,
            RunState::Exited
        );

        // Not running: at once.
        tokio::time::timeout(PATIENCE, rt.wait_exit(&id))
            .await
            .expect("wait_exit of an exited container")
            .expect("wait_exit");
        let created = s
            .create(&s.spec(
                "created",
                &images.long_running_image,
                images.long_running_command.clone(),
            ))
            .await
            .expect("create");
        tokio::time::timeout(PATIENCE, rt.wait_exit(&created))
            .await
            .expect("wait_exit of a created container")
            .expect("wait_exit");

        // Exiting by itself.
        let quick = s
            .started(s.spec("quick", &images.exiting_image, (images.exit_with)(0)))
            .await;
        tokio::time::timeout(PATIENCE, rt.wait_exit(&quick))
            .await
            .expect("wait_exit of a container exiting by itself")
            .expect("wait_exit");
        assert_eq!(
            rt.inspect(&quick).await.expect("inspect").exit_code,
            Some(0)
        );

        let err = rt
            .wait_exit(&s.name("never-created"))
            .await
            .expect_err("unknown container");
        assert!(matches!(err, RuntimeError::NotFound(_)), "{err:?}");
    })
    .await;
}

/// A container exiting by itself reports its exit code.
pub async fn exit_code(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "exit_code");
    s.run(async {
        s.ensure(images).await;
        for code in [3, 0, 1] {
            let id = s
                .started(s.spec(
                    &format!("exit-{code}"),
                    &images.exiting_image,
                    (images.exit_with)(code),
                ))
                .await;
            let status = s.exited(&id).await;
            assert_eq!(status.exit_code, Some(code), "{status:?}");
            assert!(!status.oom_killed, "{status:?}");
            assert_eq!(status.health, None);
        }
    })
    .await;
}

/// `remove` (of a running container too) forgets it: NotFound for inspect, start, stop and
/// wait_exit, gone from listings; removing it again succeeds.
pub async fn remove(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "remove");
    s.run(async {
        s.ensure(images).await;
        let spec = s.spec(
            "removed",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        let id = s.started(spec.clone()).await;
        rt.remove(&id).await.expect("remove a running container");
        let not_found = |what: &str, r: Result<(), RuntimeError>| match r {
            Err(RuntimeError::NotFound(_)) => {}
            other => panic!("{what} of a removed container: {other:?}"),
        };
        not_found("inspect", rt.inspect(&id).await.map(|_| ()));
        not_found("start", rt.start(&id).await);
        not_found("stop", rt.stop(&id, Duration::from_secs(1)).await);
        not_found("wait_exit", rt.wait_exit(&id).await);
        rt.remove(&id).await.expect("remove again");
        let listed = rt
            .list_labelled(RUN_LABEL, s.run_id())
            .await
            .expect("list_labelled");
        assert!(listed.iter().all(|c| c.id != id), "{listed:?}");
        // The name is free again.
        s.create(&spec)
            .await
            .expect("create with the name of a removed one");
    })
    .await;
}

/// `list_labelled` returns exactly the containers carrying `label=value`, in any state.
pub async fn list_labelled(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "list_labelled");
    s.run(async {
        s.ensure(images).await;
        let key = "berth.test/group";
        let value = s.name("group");
        let with = |name: &str, labels: &[(&str, &str)]| {
            let mut spec = s.spec(
                name,
                &images.long_running_image,
                images.long_running_command.clone(),
            );
            for (k, v) in labels {
                spec.labels.insert((*k).into(), (*v).into());
            }
            spec
        };
        let running = s.started(with("in-running", &[(key, &value)])).await;
        let created = s
            .create(&with("in-created", &[(key, &value)]))
            .await
            .expect("create");
        let exited = s
            .started_ready(with("in-exited", &[(key, &value), ("other", "x")]), images)
            .await;
        rt.stop(&exited, Duration::from_secs(10))
            .await
            .expect("stop");
        s.create(&with("other-value", &[(key, "something-else")]))
            .await
            .expect("create");
        s.create(&with("other-key", &[("berth.test/other", &value)]))
            .await
            .expect("create");

        let listed = rt.list_labelled(key, &value).await.expect("list_labelled");
        let mut ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        let mut want = vec![running.as_str(), created.as_str(), exited.as_str()];
        want.sort_unstable();
        assert_eq!(ids, want, "{listed:?}");
        for c in &listed {
            assert_eq!(c.labels.get(key), Some(&value));
            let state = if c.id == running {
                RunState::Running
            } else if c.id == created {
                RunState::Created
            } else {
                RunState::Exited
            };
            assert_eq!(c.state, state, "{c:?}");
        }
        let none = rt
            .list_labelled(key, &s.name("nobody"))
            .await
            .expect("list_labelled");
        assert!(none.is_empty(), "{none:?}");
    })
    .await;
}

/// A second container with a name in use is refused (Docker's 409 Conflict), and the first
/// is untouched.
pub async fn duplicate_name(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "duplicate_name");
    s.run(async {
        s.ensure(images).await;
        let spec = s.spec(
            "twin",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        let first = s.create(&spec).await.expect("create");
        let err = s.create(&spec).await.expect_err("duplicate name");
        assert!(matches!(err, RuntimeError::Engine(_)), "{err:?}");
        let status = rt.inspect(&spec.name).await.expect("inspect by name");
        assert_eq!(status.id, first);
        assert_eq!(status.state, RunState::Created);
    })
    .await;
}

/// A container with a passing health check goes from `Starting` to `Healthy`; one without
/// a check (or with `NONE`) reports no health.
pub async fn health_check(rt: &dyn ContainerRuntime, images: &TestImages) {
    let s = Scratch::new(rt, "health_check");
    s.run(async {
        s.ensure(images).await;
        let check = |test: &[&str]| HealthCheckSpec {
            test: test.iter().map(|t| t.to_string()).collect(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            retries: 3,
            start_period: Duration::ZERO,
        };
        let mut spec = s.spec(
            "healthy",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        spec.health_check = Some(check(&["CMD-SHELL", "true"]));
        let id = s.create(&spec).await.expect("create");
        assert_eq!(rt.inspect(&id).await.expect("inspect").health, None);
        rt.start(&id).await.expect("start");
        let first = rt.inspect(&id).await.expect("inspect").health;
        assert!(
            matches!(first, Some(Health::Starting | Health::Healthy)),
            "{first:?}"
        );
        s.poll(&id, "healthy", |c| c.health == Some(Health::Healthy))
            .await;

        let mut disabled = s.spec(
            "check-none",
            &images.long_running_image,
            images.long_running_command.clone(),
        );
        disabled.health_check = Some(check(&["NONE"]));
        let disabled = s.started(disabled).await;
        assert_eq!(rt.inspect(&disabled).await.expect("inspect").health, None);
    })
    .await;
}

/// A port no one on this host listens on now (for the runtime to bind).
fn free_host_port() -> u16 {
    std::net::TcpListener::bind(("0.0.0.0", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(38_123)
}

fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        format!("{}-{started}", std::process::id())
    })
}

/// The containers of one check: unique names, the run label, and removal of all of them at
/// the end, pass or fail.
struct Scratch<'a> {
    rt: &'a dyn ContainerRuntime,
    test: &'static str,
    created: Mutex<Vec<String>>,
}

impl<'a> Scratch<'a> {
    fn new(rt: &'a dyn ContainerRuntime, test: &'static str) -> Self {
        Self {
            rt,
            test,
            created: Mutex::new(Vec::new()),
        }
    }

    fn run_id(&self) -> &'static str {
        run_id()
    }

    /// A name unique to this process and run.
    fn name(&self, what: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("berth-conf-{}-{n}-{}-{what}", run_id(), self.test).replace('_', "-")
    }

    fn spec(&self, what: &str, image: &str, command: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            name: self.name(what),
            image: image.to_string(),
            command: Some(command),
            labels: [(RUN_LABEL.to_string(), run_id().to_string())].into(),
            cpu_shares: 2,
            network_mode: "bridge".into(),
            ..ContainerSpec::default()
        }
    }

    async fn ensure(&self, images: &TestImages) {
        for image in [&images.long_running_image, &images.exiting_image] {
            self.rt.ensure_image(image).await.expect("ensure_image");
        }
    }

    /// Creates the container, to be removed at the end.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let id = self.rt.create(spec).await?;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.clone());
        Ok(id)
    }

    async fn started(&self, spec: ContainerSpec) -> String {
        let id = self.create(&spec).await.expect("create");
        self.rt.start(&id).await.expect("start");
        id
    }

    /// Creates and starts a long-running container, and waits until it handles SIGTERM.
    async fn started_ready(&self, mut spec: ContainerSpec, images: &TestImages) -> String {
        spec.health_check = Some(HealthCheckSpec {
            test: images.long_running_ready_check.clone(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            retries: 3,
            start_period: Duration::ZERO,
        });
        let id = self.started(spec).await;
        self.poll(&id, "ready", |c| c.health == Some(Health::Healthy))
            .await;
        id
    }

    /// Waits for the container to exit by itself and returns its status.
    async fn exited(&self, id: &str) -> ContainerStatus {
        tokio::time::timeout(PATIENCE, self.rt.wait_exit(id))
            .await
            .expect("container did not exit in time")
            .expect("wait_exit");
        let status = self.rt.inspect(id).await.expect("inspect");
        assert_eq!(status.state, RunState::Exited, "{status:?}");
        status
    }

    /// Polls `inspect` until `done` holds, failing after [`PATIENCE`].
    async fn poll(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&ContainerStatus) -> bool,
    ) -> ContainerStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.rt.inspect(id).await.expect("inspect");
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not {what} after {PATIENCE:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the check, then removes its containers; a panic of the check is re-raised after.
    async fn run(&self, check: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(check).catch_unwind().await;
        self.cleanup().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn cleanup(&self) {
        let ids = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failed = Vec::new();
        for id in ids {
            if let Err(e) = self.rt.remove(&id).await {
                failed.push(format!("{id}: {e}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{}: could not remove containers: {failed:?}",
            self.test
        );
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        // Only when the check was abandoned midway (its future dropped): say what is left.
        let created = self.created.get_mut().unwrap_or_else(|e| e.into_inner());
        if !created.is_empty() {
            eprintln!(
                "conformance {}: abandoned with containers left: {created:?} (all carry label \
                 {RUN_LABEL}={})",
                self.test,
                run_id()
            );
        }
    }
}

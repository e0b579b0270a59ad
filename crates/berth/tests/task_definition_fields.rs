//! Task definitions mean what they say: each group of task-definition members, registered
//! through the ECS API on a real `berth dev`, is checked on the Docker container it made
//! (`docker inspect`, or from inside with `docker exec`), and members berth cannot apply
//! are refused naming the member.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const RUNNING: Duration = Duration::from_secs(60);

/// Runs `script` in the container (`sh -c`); (exit code, stdout + stderr).
fn exec(container: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `script` in the container and returns its output; the script must succeed.
fn exec_ok(container: &str, script: &str) -> String {
    let (code, out) = exec(container, script);
    assert_eq!(code, 0, "`{script}` in {container} failed: {out}");
    out
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("docker");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).0
}

async fn cluster(api: &Api, name: &str) -> String {
    api.connected_cluster(&unique(name)).await
}

async fn register(api: &Api, body: Value) -> String {
    let v = api.ok("RegisterTaskDefinition", body).await;
    v["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("arn")
        .to_string()
}

/// Runs one task of `family` and waits until it is RUNNING; returns its description.
async fn run_running(api: &Api, cluster: &str, family: &str) -> Value {
    let (tasks, failures) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": family}))
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    api.wait_tasks(cluster, &tasks, "RUNNING", RUNNING)
        .await
        .remove(0)
}

async fn run_until_stopped(api: &Api, cluster: &str, body: Value) -> Value {
    let mut body = body;
    body["cluster"] = json!(cluster);
    let (tasks, failures) = api.run_task(body).await;
    assert!(failures.is_empty(), "{failures:?}");
    api.wait_tasks(cluster, &tasks, "STOPPED", RUNNING)
        .await
        .remove(0)
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {task}"))
}

fn runtime_id(task: &Value, name: &str) -> String {
    container(task, name)["runtimeId"]
        .as_str()
        .unwrap_or_else(|| panic!("no runtimeId for {name}: {task}"))
        .to_string()
}

fn inspect(id: &str) -> Value {
    inspect_container(id).unwrap_or_else(|| panic!("no container {id}"))
}

fn task_id(task: &Value) -> String {
    task["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// A Docker timestamp (`2026-01-02T03:04:05.123456789Z`) as nanoseconds since the epoch.
fn nanos(s: &str) -> i128 {
    let (date, time) = s.trim_end_matches('Z').split_once('T').expect("timestamp");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    i128::from(secs) * 1_000_000_000 + frac.parse::<i128>().unwrap()
}

fn time_of(inspected: &Value, field: &str) -> i128 {
    nanos(inspected["State"][field].as_str().unwrap())
}

async fn stop(api: &Api, cluster: &str, task: &Value) -> Value {
    let arn = task["taskArn"].as_str().unwrap().to_string();
    api.ok("StopTask", json!({"cluster": cluster, "task": arn}))
        .await;
    api.wait_tasks(cluster, &[arn], "STOPPED", RUNNING)
        .await
        .remove(0)
}

const SLEEP: &str = SLEEP_FOREVER;

/// Volumes (bind, scratch, task- and shared-scoped Docker volumes), mount points (read-only
/// where asked), volumesFrom, tmpfs and a read-only root filesystem; task-scoped volumes go
/// with the task, shared ones stay.
#[tokio::test]
async fn storage_members_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = cluster(&api, "storage").await;
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("hello.txt"), "from the host").unwrap();
    // A shared volume is named like the task definition's volume: unique to this run.
    let shared = unique("sharedvol");
    let family = unique("storage");
    register(
        &api,
        json!({
            "family": family,
            "volumes": [
                {"name": "hostdir", "host": {"sourcePath": host_dir.path()}},
                {"name": "scratch"},
                {"name": "taskvol", "dockerVolumeConfiguration": {"scope": "task", "driver": "local", "labels": {"purpose": "test"}}},
                {"name": shared, "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true}},
            ],
            "containerDefinitions": [
                {"name": "writer", "image": BUSYBOX, "memory": 32,
                 "command": ["sh", "-c", format!("echo written > /scratch/by-writer; {SLEEP}")],
                 "readonlyRootFilesystem": true,
                 "mountPoints": [
                    {"sourceVolume": "hostdir", "containerPath": "/host", "readOnly": true},
                    {"sourceVolume": "scratch", "containerPath": "/scratch"},
                    {"sourceVolume": "taskvol", "containerPath": "/taskvol"},
                    {"sourceVolume": shared, "containerPath": "/shared"},
                 ],
                 "linuxParameters": {"tmpfs": [{"containerPath": "/tmp", "size": 16, "mountOptions": ["noexec"]}]}},
                {"name": "reader", "image": BUSYBOX, "memory": 32, "command": ["sh", "-c", SLEEP],
                 "volumesFrom": [{"sourceContainer": "writer", "readOnly": true}]},
            ]
        }),
    )
    .await;
    let task = run_running(&api, &cluster, &family).await;
    let writer = runtime_id(&task, "writer");
    let reader = runtime_id(&task, "reader");

    // Docker's view: the mounts, read-only where asked.
    let inspected = inspect(&writer);
    let mounts = inspected["Mounts"].as_array().unwrap();
    let mount = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == dest)
            .unwrap_or_else(|| panic!("no mount at {dest}: {mounts:?}"))
            .clone()
    };
    assert_eq!(mount("/host")["Type"], "bind");
    assert_eq!(mount("/host")["RW"], false);
    assert_eq!(mount("/scratch")["Type"], "volume");
    assert_eq!(mount("/scratch")["RW"], true);
    assert_eq!(mount("/shared")["Name"], shared.as_str());
    let taskvol = mount("/taskvol")["Name"].as_str().unwrap().to_string();
    assert!(taskvol.ends_with(&task_id(&task)), "{taskvol}");
    let scratch = mount("/scratch")["Name"].as_str().unwrap().to_string();
    assert_eq!(inspected["HostConfig"]["ReadonlyRootfs"], true);
    assert!(inspected["HostConfig"]["Tmpfs"]["/tmp"]
        .as_str()
        .unwrap()
        .contains("size=16m"));
    let (_, labels) = docker(&["volume", "inspect", "-f", "{{json .Labels}}", &taskvol]);
    assert!(labels.contains("\"purpose\":\"test\""), "{labels}");

    // From inside: the host file, read-only; the root filesystem is read-only; the tmpfs is
    // writable but noexec.
    assert_eq!(exec_ok(&writer, "cat /host/hello.txt"), "from the host");
    assert_ne!(exec(&writer, "touch /host/nope").0, 0);
    assert_ne!(exec(&writer, "touch /nope").0, 0);
    exec_ok(
        &writer,
        "touch /tmp/ok && touch /taskvol/ok && touch /shared/ok",
    );
    exec_ok(&writer, "grep ' /tmp ' /proc/mounts | grep -q noexec");
    // volumesFrom: the reader sees the writer's volumes, read-only.
    eventually("the reader to see the writer's file", RUNNING, || async {
        match exec(&reader, "cat /scratch/by-writer") {
            (0, out) if out.trim() == "written" => Ok(()),
            other => Err(json!(format!("{other:?}"))),
        }
    })
    .await;
    assert_ne!(exec(&reader, "touch /scratch/nope").0, 0);
    assert_eq!(exec_ok(&reader, "cat /host/hello.txt"), "from the host");

    // Task-scoped volumes go with the task's containers; the shared one stays.
    stop(&api, &cluster, &task).await;
    wait_until("the task's volumes removed", RUNNING, || {
        !volume_exists(&taskvol) && !volume_exists(&scratch)
    })
    .await;
    assert!(volume_exists(&shared));
    let _ = docker(&["volume", "rm", &shared]);
}

const MIB: i64 = 1024 * 1024;

/// Task-level cpu/memory are a cgroup over all the task's containers (and each container's
/// limit is at most the task's); container memory is a hard limit, memoryReservation a soft
/// one, cpu CPU shares; ulimits, /dev/shm size, swap and swappiness are set.
#[tokio::test]
async fn resource_members_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = cluster(&api, "resources").await;
    let family = unique("resources");
    register(
        &api,
        json!({
            "family": family,
            "cpu": "512",
            "memory": "256",
            "containerDefinitions": [
                {"name": "limited", "image": BUSYBOX, "cpu": 128, "memory": 64, "memoryReservation": 32,
                 "command": ["sh", "-c", SLEEP],
                 "ulimits": [{"name": "nofile", "softLimit": 1000, "hardLimit": 2000}],
                 "linuxParameters": {"sharedMemorySize": 32, "maxSwap": 16, "swappiness": 10,
                                     "initProcessEnabled": true}},
                {"name": "open", "image": BUSYBOX, "command": ["sh", "-c", SLEEP]},
            ]
        }),
    )
    .await;
    let task = run_running(&api, &cluster, &family).await;
    let limited = inspect(&runtime_id(&task, "limited"));
    let open = inspect(&runtime_id(&task, "open"));
    let parent = format!("/berth/{}", task_id(&task));
    let host = &limited["HostConfig"];
    assert_eq!(host["Memory"], 64 * MIB);
    assert_eq!(host["MemoryReservation"], 32 * MIB);
    assert_eq!(host["CpuShares"], 128);
    assert_eq!(host["MemorySwap"], (64 + 16) * MIB);
    assert_eq!(host["MemorySwappiness"], 10);
    assert_eq!(host["ShmSize"], 32 * MIB);
    assert_eq!(host["Ulimits"][0]["Name"], "nofile");
    assert_eq!(host["Ulimits"][0]["Soft"], 1000);
    assert_eq!(host["CgroupParent"], parent.as_str());
    // A container without its own memory is limited to the task's.
    assert_eq!(open["HostConfig"]["Memory"], 256 * MIB);
    assert_eq!(open["HostConfig"]["CgroupParent"], parent.as_str());

    // The task's cgroup caps both containers together (cgroup v1 here; v2 elsewhere).
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").join(parent.trim_start_matches('/'));
    if v1.exists() {
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
        assert_eq!(
            read(v1.join("memory.limit_in_bytes")),
            (256 * MIB).to_string()
        );
        let cpu = std::path::Path::new("/sys/fs/cgroup/cpu").join(parent.trim_start_matches('/'));
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    } else {
        let v2 = std::path::Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/'));
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
        assert_eq!(read(v2.join("memory.max")), (256 * MIB).to_string());
        assert_eq!(read(v2.join("cpu.max")), "50000 100000");
    }

    // From inside.
    let id = runtime_id(&task, "limited");
    // The container's own process (exec'd processes' soft limits vary with runc).
    let limits = exec_ok(&id, "grep 'Max open files' /proc/1/limits");
    assert_eq!(
        limits.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1000", "2000"],
        "{limits}"
    );
    assert_eq!(host["Init"], true);
    assert!(exec_ok(&id, "cat /proc/1/cmdline").starts_with("/sbin/docker-init"));
    assert!(exec_ok(&id, "df -k /dev/shm").contains("32768"));

    stop(&api, &cluster, &task).await;
    wait_until("the task's cgroup removed", RUNNING, || !v1.exists()).await;
}

/// Whether capability `bit` is in a `/proc/<pid>/status` capability mask line.
fn has_cap(status: &str, line: &str, bit: u32) -> bool {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no {line} in {status}"));
    mask & (1 << bit) != 0
}

/// entryPoint, command, workingDirectory, user, capabilities, init, devices, security
/// options, sysctls, PID/IPC namespaces shared by the task, terminal, hostname, DNS, extra
/// hosts, links, disableNetworking, privileged, labels and environment files.
#[tokio::test]
async fn process_and_security_members_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    // Added capabilities are host-level access: the dev agent must opt in.
    let berth = Berth::dev_with(dir.path(), &["--allow-added-capabilities"]);
    let api = berth.api();
    let cluster = cluster(&api, "process").await;
    let env_dir = tempfile::tempdir().unwrap();
    let env_file = env_dir.path().join("app.env");
    std::fs::write(
        &env_file,
        "# settings\nFROM_FILE=file value\nBOTH=from the file\n",
    )
    .unwrap();
    let family = unique("process");
    register(
        &api,
        json!({
            "family": family,
            "pidMode": "task",
            "ipcMode": "task",
            "containerDefinitions": [
                {"name": "peer", "image": BUSYBOX, "memory": 32, "essential": false,
                 "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3601 & wait"]},
                {"name": "main", "image": BUSYBOX, "memory": 32,
                 "entryPoint": ["sh", "-c"],
                 "command": [SLEEP],
                 "workingDirectory": "/srv",
                 "user": "1000:1000",
                 "linuxParameters": {
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN"]},
                    "devices": [{"hostPath": "/dev/null", "containerPath": "/dev/berth-null", "permissions": ["read", "write"]}],
                 },
                 "dockerSecurityOptions": ["no-new-privileges"],
                 "systemControls": [{"namespace": "net.core.somaxconn", "value": "1234"}],
                 "interactive": true,
                 "pseudoTerminal": true,
                 "hostname": "berth-host",
                 "dnsServers": ["10.9.8.7"],
                 "dnsSearchDomains": ["example.internal"],
                 "extraHosts": [{"hostname": "db.internal", "ipAddress": "10.1.2.3"}],
                 "links": ["peer:buddy"],
                 "dockerLabels": {"team": "platform"},
                 "environment": [{"name": "BOTH", "value": "from the definition"}],
                 "environmentFiles": [{"value": env_file, "type": "file"}]},
                // (privileged: true is passed on too, but this host's Docker cannot run
                // privileged containers; spec unit tests cover it.)
                {"name": "isolated", "image": BUSYBOX, "memory": 32, "essential": false,
                 "privileged": false, "disableNetworking": true, "command": ["sh", "-c", SLEEP]},
            ]
        }),
    )
    .await;
    let task = run_running(&api, &cluster, &family).await;
    let main = runtime_id(&task, "main");
    let i = inspect(&main);
    let (config, host) = (&i["Config"], &i["HostConfig"]);
    assert_eq!(config["Entrypoint"], json!(["sh", "-c"]));
    assert_eq!(config["Cmd"], json!([SLEEP]));
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["OpenStdin"], true);
    assert_eq!(config["Tty"], true);
    assert_eq!(config["Hostname"], "berth-host");
    assert_eq!(config["Labels"]["team"], "platform");
    assert_eq!(host["CapAdd"], json!(["NET_ADMIN"]));
    assert_eq!(host["CapDrop"], json!(["CHOWN"]));
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["Devices"][0]["PathInContainer"], "/dev/berth-null");
    assert_eq!(host["Devices"][0]["CgroupPermissions"], "rw");
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(host["Sysctls"]["net.core.somaxconn"], "1234");
    assert_eq!(host["Dns"], json!(["10.9.8.7"]));
    assert_eq!(host["DnsSearch"], json!(["example.internal"]));
    assert_eq!(host["ExtraHosts"], json!(["db.internal:10.1.2.3"]));
    assert!(
        host["Links"][0].as_str().unwrap().ends_with("/buddy"),
        "{}",
        host["Links"]
    );
    // The task's containers share the PID and IPC namespaces of its pause container.
    let pid_mode = host["PidMode"].as_str().unwrap().to_string();
    assert!(pid_mode.starts_with("container:"), "{pid_mode}");
    assert_eq!(host["IpcMode"], pid_mode.as_str());
    let pause = inspect(pid_mode.trim_start_matches("container:"));
    assert_eq!(
        pause["Config"]["Labels"]["com.amazonaws.ecs.container-name"],
        "~internal~ecs~pause"
    );
    assert_eq!(pause["State"]["Running"], true);

    // From inside.
    assert_eq!(exec_ok(&main, "id -u").trim(), "1000");
    assert_eq!(exec_ok(&main, "pwd").trim(), "/srv");
    assert_eq!(exec_ok(&main, "hostname").trim(), "berth-host");
    assert_eq!(
        exec_ok(&main, "cat /proc/sys/net/core/somaxconn").trim(),
        "1234"
    );
    let status = exec_ok(&main, "cat /proc/self/status");
    assert!(has_cap(&status, "CapBnd:", 12), "NET_ADMIN added: {status}");
    assert!(!has_cap(&status, "CapBnd:", 0), "CHOWN dropped: {status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    exec_ok(&main, "test -c /dev/berth-null");
    let resolv = exec_ok(&main, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.9.8.7"), "{resolv}");
    assert!(resolv.contains("example.internal"), "{resolv}");
    let hosts = exec_ok(&main, "cat /etc/hosts");
    assert!(hosts.contains("10.1.2.3\tdb.internal"), "{hosts}");
    assert!(
        hosts.contains("buddy"),
        "the link's alias resolves: {hosts}"
    );
    // One PID namespace: main sees peer's process.
    let ps = exec_ok(&main, "ps -o args");
    assert!(ps.contains("sleep 3601"), "{ps}");
    assert_eq!(exec_ok(&main, "echo $FROM_FILE").trim(), "file value");
    assert_eq!(exec_ok(&main, "echo $BOTH").trim(), "from the definition");

    let isolated = runtime_id(&task, "isolated");
    assert_eq!(inspect(&isolated)["Config"]["NetworkDisabled"], true);
    assert_eq!(exec_ok(&isolated, "ls /sys/class/net").trim(), "lo");

    stop(&api, &cluster, &task).await;
    let pause_id = pid_mode.trim_start_matches("container:").to_string();
    wait_until("the pause container removed", RUNNING, || {
        inspect_container(&pause_id).is_none()
    })
    .await;
}

/// dependsOn START/COMPLETE/SUCCESS/HEALTHY are observed (by the containers' timestamps); a
/// non-essential container's exit leaves the task running; stopTimeout is SIGTERM then
/// SIGKILL after it, dependents stopped first; a dependency that misses its startTimeout
/// fails the task.
#[tokio::test]
async fn ordering_and_lifecycle_members_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    // Keep stopped containers to inspect them.
    let berth = Berth::dev_with(dir.path(), &["--task-cleanup-wait", "10m"]);
    let api = berth.api();
    let cluster = cluster(&api, "ordering").await;
    let family = unique("ordering");
    register(
        &api,
        json!({
            "family": family,
            "containerDefinitions": [
                {"name": "init", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sh", "-c", "sleep 1"]},
                {"name": "migrate", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sh", "-c", "exit 0"],
                 "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
                {"name": "db", "image": BUSYBOX, "memory": 16,
                 "command": ["sh", "-c", SLEEP],
                 "healthCheck": {"command": ["CMD-SHELL", "pidof sleep"], "interval": 5, "retries": 3}},
                {"name": "sidecar", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sh", "-c", "trap '' TERM; sleep 3600 & wait"], "stopTimeout": 2},
                {"name": "flaky", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sh", "-c", "exit 5"]},
                {"name": "app", "image": BUSYBOX, "memory": 16,
                 "command": ["sh", "-c", SLEEP],
                 "dependsOn": [
                    {"containerName": "init", "condition": "COMPLETE"},
                    {"containerName": "migrate", "condition": "SUCCESS"},
                    {"containerName": "db", "condition": "HEALTHY"},
                    {"containerName": "sidecar", "condition": "START"},
                 ]},
            ]
        }),
    )
    .await;
    let slow = unique("slowdep");
    register(
        &api,
        json!({
            "family": slow,
            "containerDefinitions": [
                {"name": "db", "image": BUSYBOX, "memory": 16, "startTimeout": 2,
                 "command": ["sh", "-c", SLEEP],
                 "healthCheck": {"command": ["CMD-SHELL", "exit 1"], "interval": 30, "retries": 10}},
                {"name": "app", "image": BUSYBOX, "memory": 16, "command": ["sh", "-c", SLEEP],
                 "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
            ]
        }),
    )
    .await;
    let (slow_tasks, _) = api
        .run_task(json!({"cluster": cluster, "taskDefinition": slow}))
        .await;
    let task = run_running(&api, &cluster, &family).await;
    let arn = task["taskArn"].as_str().unwrap().to_string();

    let started = |name: &str| time_of(&inspect(&runtime_id(&task, name)), "StartedAt");
    let finished = |name: &str| time_of(&inspect(&runtime_id(&task, name)), "FinishedAt");
    assert!(
        started("migrate") >= finished("init"),
        "SUCCESS: migrate after init"
    );
    assert!(started("app") >= finished("init"), "COMPLETE");
    assert!(started("app") >= finished("migrate"), "SUCCESS");
    assert!(started("app") >= started("sidecar"), "START");
    let db = inspect(&runtime_id(&task, "db"));
    let healthy_at = db["State"]["Health"]["Log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ExitCode"] == 0)
        .map(|l| nanos(l["End"].as_str().unwrap()))
        .expect("db became healthy");
    assert!(started("app") >= healthy_at, "HEALTHY");

    // The non-essential container's exit leaves the task running.
    let described = eventually("flaky to exit", RUNNING, || async {
        let t = api
            .describe_tasks(&cluster, std::slice::from_ref(&arn))
            .await
            .remove(0);
        if container(&t, "flaky")["lastStatus"] == "STOPPED" {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    assert_eq!(described["lastStatus"], "RUNNING");
    assert_eq!(container(&described, "flaky")["exitCode"], 5);

    // Stop: dependents first; the sidecar ignores SIGTERM and is killed after its 2s.
    let stopped = stop(&api, &cluster, &task).await;
    assert_eq!(container(&stopped, "app")["exitCode"], 0);
    assert_eq!(container(&stopped, "sidecar")["exitCode"], 137);
    let sidecar_killed = finished("sidecar");
    assert!(
        sidecar_killed - finished("app") >= 1_900_000_000,
        "the sidecar had its stopTimeout after app stopped"
    );
    assert!(
        finished("db") >= finished("app"),
        "app (a dependent) stopped before db"
    );

    // The dependency that never became healthy failed its task after its startTimeout.
    let failed = api
        .wait_tasks(&cluster, &slow_tasks, "STOPPED", RUNNING)
        .await
        .remove(0);
    assert_eq!(failed["stopCode"], "TaskFailedToStart");
    let reason = failed["stoppedReason"].as_str().unwrap();
    assert!(reason.contains("startTimeout of 2s"), "{reason}");
}

/// ECS's container restart policy: a container that ran for its restartAttemptPeriod and
/// exits is restarted in place (same container, the task keeps running); one that exits
/// sooner, or with an ignored exit code, is not. The period's minimum is ECS's 60 s, so
/// this test takes a minute.
#[tokio::test]
async fn restart_policy_restarts_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = cluster(&api, "restart").await;
    let family = unique("restart");
    let policy = json!({"enabled": true, "ignoredExitCodes": [9], "restartAttemptPeriod": 60});
    register(
        &api,
        json!({
            "family": family,
            "containerDefinitions": [
                // Exits after the attempt period the first time, then runs on.
                {"name": "worker", "image": BUSYBOX, "memory": 16, "restartPolicy": policy,
                 "command": ["sh", "-c",
                    "if [ ! -e /ran ]; then touch /ran; sleep 61; exit 4; fi; trap 'exit 0' TERM; sleep 3600 & wait"]},
                // Exits at once: too early to be restarted.
                {"name": "early", "image": BUSYBOX, "memory": 16, "essential": false,
                 "restartPolicy": policy, "command": ["sh", "-c", "exit 3"]},
                // Exits with an ignored code after the period: not restarted.
                {"name": "ignored", "image": BUSYBOX, "memory": 16, "essential": false,
                 "restartPolicy": policy, "command": ["sh", "-c", "sleep 61; exit 9"]},
            ]
        }),
    )
    .await;
    let task = run_running(&api, &cluster, &family).await;
    let arn = task["taskArn"].as_str().unwrap().to_string();
    let worker = runtime_id(&task, "worker");
    let first_start = time_of(&inspect(&worker), "StartedAt");

    // The worker exits after 61 s and is started again, in place.
    eventually(
        "the worker to be restarted",
        Duration::from_secs(120),
        || async {
            let i = inspect(&worker);
            if i["State"]["Running"] == true && time_of(&i, "StartedAt") > first_start {
                Ok(())
            } else {
                Err(i["State"].clone())
            }
        },
    )
    .await;
    let ignored = runtime_id(&task, "ignored");
    eventually("the ignored exit", Duration::from_secs(30), || async {
        let i = inspect(&ignored);
        if i["State"]["Running"] == false {
            Ok(())
        } else {
            Err(i["State"].clone())
        }
    })
    .await;
    let described = api
        .describe_tasks(&cluster, std::slice::from_ref(&arn))
        .await
        .remove(0);
    assert_eq!(described["lastStatus"], "RUNNING", "{described}");
    assert_eq!(container(&described, "worker")["lastStatus"], "RUNNING");
    assert_eq!(
        container(&described, "worker")["runtimeId"],
        worker.as_str()
    );
    let early = inspect(&runtime_id(&task, "early"));
    assert_eq!(early["State"]["Running"], false);
    assert_eq!(early["State"]["ExitCode"], 3);
    assert_eq!(inspect(&ignored)["State"]["ExitCode"], 9);
    // Docker's own restart policy is not involved: the agent restarted it.
    let docker_policy = inspect(&worker)["HostConfig"]["RestartPolicy"]["Name"].clone();
    assert!(
        docker_policy == "" || docker_policy == "no",
        "{docker_policy}"
    );
    stop(&api, &cluster, &task).await;
}

/// Stopped tasks stay inspectable for --task-cleanup-wait (`docker logs` works after a
/// crash), then go; a restarted agent removes the containers of tasks that stopped long
/// enough ago.
#[tokio::test]
async fn cleanup_wait_keeps_then_removes_containers() {
    let dir = tempfile::tempdir().unwrap();
    let mut berth = Berth::dev_with(dir.path(), &["--task-cleanup-wait", "4s"]);
    let api = berth.api();
    let cluster = cluster(&api, "cleanup").await;
    let family = unique("crash");
    register(
        &api,
        json!({"family": family, "containerDefinitions": [
            {"name": "main", "image": BUSYBOX, "memory": 16,
             "command": ["sh", "-c", "echo last words; exit 2"]}]}),
    )
    .await;
    let stopped = run_until_stopped(&api, &cluster, json!({"taskDefinition": family})).await;
    let stopped_at = Instant::now();
    let id = runtime_id(&stopped, "main");
    let (ok, logs) = docker(&["logs", &id]);
    assert!(ok && logs.contains("last words"), "{logs}");
    wait_until(
        "the crashed container removed",
        Duration::from_secs(30),
        || inspect_container(&id).is_none(),
    )
    .await;
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(3),
        "removed before the cleanup wait"
    );

    // Stopped while the next agent would keep it for an hour: still there after a restart.
    drop(api);
    berth.kill9();
    let berth = Berth::dev_with(dir.path(), &["--task-cleanup-wait", "1h"]);
    let api = berth.api();
    let second = run_until_stopped(&api, &cluster, json!({"taskDefinition": family})).await;
    let second_id = runtime_id(&second, "main");
    let mut berth = berth;
    drop(api);
    berth.kill9();
    // The next agent's wait has passed for it: the agent removes it on its first sweep.
    let berth = Berth::dev_with(dir.path(), &["--task-cleanup-wait", "0s"]);
    wait_until(
        "the earlier task's container removed",
        Duration::from_secs(30),
        || inspect_container(&second_id).is_none(),
    )
    .await;
    drop(berth);
}

async fn fetch(container: &str, path: &str) -> Value {
    let out = exec_ok(
        container,
        &format!("wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4{path}\""),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
}

/// Every container gets ECS_CONTAINER_METADATA_URI_V4 and reads its container, task and
/// stats documents from it, in the bridge and host network modes; `none` gets none.
#[tokio::test]
async fn task_metadata_endpoint_answers_from_inside() {
    let dir = tempfile::tempdir().unwrap();
    // networkMode host is host-level access: the dev agent must opt in.
    let berth = Berth::dev_with(dir.path(), &["--allow-host-namespaces"]);
    let api = berth.api();
    let cluster = cluster(&api, "metadata").await;
    let bridge = unique("mdbridge");
    register(
        &api,
        json!({"family": bridge, "cpu": "256", "memory": "128", "containerDefinitions": [
            {"name": "app", "image": BUSYBOX, "cpu": 64, "memory": 64,
             "command": ["sh", "-c", SLEEP], "dockerLabels": {"team": "x"}},
            {"name": "side", "image": BUSYBOX, "essential": false, "command": ["sh", "-c", SLEEP]}]}),
    )
    .await;
    let host = unique("mdhost");
    register(
        &api,
        json!({"family": host, "networkMode": "host", "containerDefinitions": [
            {"name": "app", "image": BUSYBOX, "memory": 32, "command": ["sh", "-c", SLEEP]}]}),
    )
    .await;
    let none = unique("mdnone");
    register(
        &api,
        json!({"family": none, "networkMode": "none", "containerDefinitions": [
            {"name": "app", "image": BUSYBOX, "memory": 32, "command": ["sh", "-c", SLEEP]}]}),
    )
    .await;
    let task = run_running(&api, &cluster, &bridge).await;
    let arn = task["taskArn"].as_str().unwrap();
    let app = runtime_id(&task, "app");

    let me = fetch(&app, "").await;
    assert_eq!(me["DockerId"], app.as_str());
    assert_eq!(me["Name"], "app");
    assert_eq!(me["Image"], BUSYBOX);
    assert_eq!(me["Limits"], json!({"CPU": 64, "Memory": 64}));
    assert_eq!(me["KnownStatus"], "RUNNING");
    assert_eq!(me["Labels"]["team"], "x");
    assert_eq!(me["Networks"][0]["NetworkMode"], "bridge");
    assert!(me["Networks"][0]["IPv4Addresses"][0].is_string(), "{me}");
    assert!(
        me["ContainerARN"].as_str().unwrap().contains(":container/"),
        "{me}"
    );
    assert!(me["StartedAt"].is_string(), "{me}");

    let t = fetch(&app, "/task").await;
    assert_eq!(t["TaskARN"], arn);
    assert_eq!(t["Cluster"], cluster.as_str());
    assert_eq!(t["Family"], bridge.as_str());
    assert_eq!(t["Revision"], "1");
    assert_eq!(t["DesiredStatus"], "RUNNING");
    assert_eq!(t["KnownStatus"], "RUNNING");
    assert_eq!(t["LaunchType"], "EC2");
    assert_eq!(t["Limits"], json!({"CPU": 0.25, "Memory": 128}));
    let names: Vec<&str> = t["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "side"]);
    assert_eq!(t["Containers"][1]["Limits"]["Memory"], 128);

    let stats = fetch(&app, "/stats").await;
    assert!(stats["memory_stats"].is_object(), "{stats}");
    let task_stats = fetch(&app, "/task/stats").await;
    assert!(
        task_stats[app.as_str()]["cpu_stats"].is_object(),
        "{task_stats}"
    );
    assert!(
        task_stats[runtime_id(&task, "side")].is_object(),
        "{task_stats}"
    );

    // Host network mode: on the loopback.
    let host_task = run_running(&api, &cluster, &host).await;
    let host_app = runtime_id(&host_task, "app");
    let uri = exec_ok(&host_app, "echo $ECS_CONTAINER_METADATA_URI_V4");
    assert!(uri.starts_with("http://127.0.0.1:"), "{uri}");
    assert_eq!(fetch(&host_app, "/task").await["Family"], host.as_str());

    // No network: no endpoint.
    let none_task = run_running(&api, &cluster, &none).await;
    let none_app = runtime_id(&none_task, "app");
    assert_eq!(
        exec_ok(&none_app, "echo \"[$ECS_CONTAINER_METADATA_URI_V4]\"").trim(),
        "[]"
    );
    // Stopped, the task's cgroup goes too (the harness only removes containers).
    stop(&api, &cluster, &task).await;
}

/// logConfiguration reaches Docker (driver and options); `none` keeps no logs.
#[tokio::test]
async fn log_configuration_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::dev(dir.path());
    let api = berth.api();
    let cluster = cluster(&api, "logs").await;
    let family = unique("logs");
    register(
        &api,
        json!({"family": family, "containerDefinitions": [
            {"name": "json", "image": BUSYBOX, "memory": 16,
             "command": ["sh", "-c", format!("echo hello json; {SLEEP}")],
             "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m", "max-file": "2"}}},
            {"name": "quiet", "image": BUSYBOX, "memory": 16, "essential": false,
             "command": ["sh", "-c", SLEEP], "logConfiguration": {"logDriver": "none"}}]}),
    )
    .await;
    let task = run_running(&api, &cluster, &family).await;
    let json_id = runtime_id(&task, "json");
    let log = &inspect(&json_id)["HostConfig"]["LogConfig"];
    assert_eq!(log["Type"], "json-file");
    assert_eq!(log["Config"], json!({"max-size": "1m", "max-file": "2"}));
    eventually("the json-file log", RUNNING, || async {
        match docker(&["logs", &json_id]) {
            (true, out) if out.contains("hello json") => Ok(()),
            other => Err(json!(format!("{other:?}"))),
        }
    })
    .await;
    let quiet = inspect(&runtime_id(&task, "quiet"));
    assert_eq!(quiet["HostConfig"]["LogConfig"]["Type"], "none");
    stop(&api, &cluster, &task).await;
}

/// What berth cannot apply is refused, naming the member: at registration
/// (ClientException) and at launch (InvalidParameterException).
#[tokio::test]
async fn members_berth_cannot_apply_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::server(dir.path(), &[]);
    let api = berth.api();
    let container = |extra: Value| {
        let mut c = json!({"name": "app", "image": BUSYBOX, "memory": 32});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"family": "refused", "containerDefinitions": [c]})
    };
    let task = |extra: Value| {
        let mut t = container(json!({}));
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t
    };
    let cases = [
        (
            container(
                json!({"logConfiguration": {"logDriver": "json-file", "secretOptions":
                    [{"name": "A", "valueFrom": "arn:aws:secretsmanager:r:a:secret:x"}]}}),
            ),
            "containerDefinitions[0].logConfiguration.secretOptions",
        ),
        (
            container(json!({"repositoryCredentials": {"credentialsParameter": "arn:x"}})),
            "containerDefinitions[0].repositoryCredentials",
        ),
        (
            container(json!({"resourceRequirements": [{"type": "GPU", "value": "1"}]})),
            "containerDefinitions[0].resourceRequirements",
        ),
        (
            container(
                json!({"logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}}}),
            ),
            "awslogs",
        ),
        (
            container(
                json!({"environmentFiles": [{"value": "arn:aws:s3:::bucket/app.env", "type": "s3"}]}),
            ),
            "environmentFiles type 's3'",
        ),
        (
            container(json!({"firelensConfiguration": {"type": "fluentbit"}})),
            "firelensConfiguration",
        ),
        (
            task(
                json!({"volumes": [{"name": "efs", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]}),
            ),
            "volumes[0].efsVolumeConfiguration",
        ),
        (
            task(json!({"runtimePlatform": {"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"}})),
            "operatingSystemFamily",
        ),
    ];
    for (body, named) in cases {
        let message = api
            .err("RegisterTaskDefinition", body.clone(), "ClientException")
            .await;
        assert!(message.contains(named), "{named}: {message}");
    }
    // A definition with only empty defaults of refused members registers (Terraform sends
    // `secrets: []`).
    api.ok(
        "RegisterTaskDefinition",
        container(json!({"secrets": [], "mountPoints": [], "volumesFrom": []})),
    )
    .await;

    api.create_cluster("refused").await;
    for (overrides, named) in [(
        json!({"containerOverrides": [{"name": "app", "resourceRequirements": [{"type": "GPU", "value": "1"}]}]}),
        "overrides.containerOverrides[0].resourceRequirements",
    )] {
        let message = api
            .err(
                "RunTask",
                json!({"cluster": "refused", "taskDefinition": "refused", "overrides": overrides}),
                "InvalidParameterException",
            )
            .await;
        assert!(message.contains(named), "{named}: {message}");
    }
    let message = api
        .err(
            "RunTask",
            json!({"cluster": "refused", "taskDefinition": "refused", "enableExecuteCommand": true}),
            "InvalidParameterException",
        )
        .await;
    assert!(message.contains("enableExecuteCommand"), "{message}");
}

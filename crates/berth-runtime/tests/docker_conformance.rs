//! The runtime conformance suite against the local Docker Engine, with the busybox test
//! image (`scripts/build-test-images`). Skipped, with a message, when no daemon answers.

use std::time::Duration;

use berth_runtime::conformance::{self, TestImages};
use berth_runtime::{ContainerRuntime, DockerRuntime};

const BUSYBOX: &str = "berth-test/busybox:latest";

fn sh(script: String) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script]
}

fn images() -> TestImages {
    TestImages {
        long_running_image: BUSYBOX.into(),
        long_running_command: sh("trap 'exit 0' TERM; sleep 3600 & wait".into()),
        // `sleep` runs only once the trap is set.
        long_running_ready_check: vec!["CMD-SHELL".into(), "pidof sleep".into()],
        ignores_sigterm_command: sh("trap '' TERM; sleep 3600 & wait".into()),
        exiting_image: BUSYBOX.into(),
        exit_with: |code| sh(format!("exit {code}")),
        exit_unless_env: |name, value| sh(format!("test \"${name}\" = '{value}'")),
    }
}

/// The Docker driver, or `None` (after saying so) when no daemon answers.
async fn docker(test: &str) -> Option<DockerRuntime> {
    let connected = tokio::time::timeout(Duration::from_secs(15), async {
        let rt = DockerRuntime::connect().await?;
        rt.host_info().await?;
        Ok::<_, berth_runtime::RuntimeError>(rt)
    })
    .await;
    let rt = match connected {
        Ok(Ok(rt)) => rt,
        Ok(Err(e)) => {
            eprintln!("SKIPPED docker conformance {test}: no Docker daemon answers: {e}");
            return None;
        }
        Err(_) => {
            eprintln!("SKIPPED docker conformance {test}: the Docker daemon did not answer in 15s");
            return None;
        }
    };
    assert!(
        rt.client().inspect_image(BUSYBOX).await.is_ok(),
        "image {BUSYBOX} is missing: run scripts/build-test-images first"
    );
    Some(rt)
}

macro_rules! docker_conformance {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let Some(rt) = docker(stringify!($check)).await else {
                    return;
                };
                let rt: &dyn ContainerRuntime = &rt;
                conformance::$check(rt, &images()).await;
            }
        )*
    };
}

docker_conformance!(
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
);

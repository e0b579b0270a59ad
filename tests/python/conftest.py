"""Fixtures for berth's boto3 compatibility suite.

One `berth dev` process (control plane + Docker agent + embedded store) serves the
whole session; every test gets its own cluster, named after a per-run prefix, so
tests do not see each other's tasks. Teardown stops berth and removes every
container it created (berth's agent leaves task containers running on shutdown).

Credentials: berth verifies SigV4. The session's `berth dev` (`berth_dev`, `ecs`) runs with
auth on and the clients sign with the admin key the server wrote to its data directory
(`BerthDev.credentials()`). The service and Terraform suites' servers (`services_berth`,
`fresh_berth_dev`) run with `--insecure-any-credentials`, since those suites sign with
"x"/"x" and test other things. The identity suites (test_iam*.py, test_secrets.py) start a
`berth server` with auth on (`auth_server`).

Environment:
  BERTH_BIN   path of the berth binary (default: <repo>/target/debug/berth)
  BERTH_LOG   berth's log filter (default here: info); the log is written to
              <tmp>/berth.log and its tail is printed if berth fails to start
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30
LISTENING_RE = re.compile(r"^berth: listening on (https?://127\.0\.0\.1:\d+)\s*$")

CLUSTER_LABEL = "com.amazonaws.ecs.cluster"
AGENT_LABEL = "berth.agent-id"


def berth_bin() -> Path:
    path = Path(os.environ.get("BERTH_BIN") or REPO / "target" / "debug" / "berth")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"berth binary not found at {path}: run `cargo build -p berth` or set BERTH_BIN",
            returncode=2,
        )
    return path


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def docker_inspect(container_id: str) -> dict | None:
    """`docker inspect` of one container, or None if it does not exist."""
    out = docker("inspect", "--type", "container", container_id, check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)[0]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class BerthDev:
    """A running `berth dev` process."""

    def __init__(
        self,
        tmp: Path,
        run_id: str,
        extra_args: list[str] | None = None,
        command: str = "dev",
    ):
        self.command = command
        self.run_id = run_id
        self.data_dir = tmp / "data"
        self.log_path = tmp / "berth.log"
        self.url: str | None = None
        env = dict(os.environ)
        env.setdefault("BERTH_LOG", "info")
        env["NO_COLOR"] = "1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(berth_bin()),
                command,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(self.data_dir),
                *(extra_args or []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        # Drains stdout for the life of the process so berth never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def wait_listening(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:  # stdout closed: berth exited
                break
            seen.append(line.rstrip("\n"))
            m = LISTENING_RE.match(line)
            if m:
                self.url = m.group(1)
                return self.url
        exited = self.proc.poll()
        self.stop()
        why = f"exited with code {exited}" if exited is not None else f"timed out after {timeout}s"
        raise RuntimeError(
            f"berth dev did not print its listening line ({why}); stdout: {seen!r}\n"
            f"--- tail of {self.log_path} ---\n{_log_tail(self.log_path)}"
        )

    def credentials(self) -> tuple[str, str]:
        """The account root's admin key (id, secret), from the credentials file the server
        writes to its data directory on first start."""
        server_dir = self.data_dir / "server" if self.command == "dev" else self.data_dir
        return read_credentials(server_dir / "credentials")

    def agent_id(self) -> str | None:
        try:
            state = json.loads((self.data_dir / "agent" / "identity.json").read_text())
        except (OSError, ValueError):
            return None
        return state.get("agentId") or None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def remove_containers(self) -> list[str]:
        """Removes the containers of this run: those of berth's agent and those of clusters
        named with this run's prefix. Returns their ids."""
        out = docker(
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            f"label={CLUSTER_LABEL}",
            "--format",
            f'{{{{.ID}}}}\t{{{{.Label "{CLUSTER_LABEL}"}}}}\t{{{{.Label "{AGENT_LABEL}"}}}}',
            check=False,
        )
        agent = self.agent_id()
        ids = []
        for line in out.stdout.splitlines():
            cid, cluster, owner = (line.split("\t") + ["", ""])[:3]
            # The label holds the cluster name; accept an ARN too.
            cluster = cluster.rsplit("/", 1)[-1]
            if cluster.startswith(self.run_id) or (agent and owner == agent):
                ids.append(cid)
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        return ids


@pytest.fixture(scope="session")
def berth_dev(tmp_path_factory):
    run_id = f"pyt{uuid.uuid4().hex[:8]}"
    server = BerthDev(tmp_path_factory.mktemp("berth"), run_id)
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()
        server.remove_containers()


@pytest.fixture(scope="session")
def berth_url(berth_dev) -> str:
    """URL of the session's `berth dev` API, e.g. http://127.0.0.1:41234."""
    assert berth_dev.url
    return berth_dev.url


@pytest.fixture(scope="session")
def ecs(berth_dev, berth_url):
    key, secret = berth_dev.credentials()
    return boto3.client(
        "ecs",
        endpoint_url=berth_url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


@pytest.fixture
def unique_name(berth_dev, request):
    """Returns a name unique to this run and test (a prefix teardown recognises)."""
    base = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:40].strip("-")
    counter = iter(range(1000))

    def make(kind: str = "") -> str:
        suffix = f"-{kind}" if kind else ""
        return f"{berth_dev.run_id}-{base}{suffix}-{next(counter)}"

    return make


@pytest.fixture
def cluster(ecs, unique_name) -> str:
    """A fresh cluster for one test; its name starts with the run id."""
    name = unique_name("c")
    ecs.create_cluster(clusterName=name)
    # The dev agent joins a new cluster one poll round-trip later; RunTask before that
    # finds no container instance (as ECS does before an instance registers).
    deadline = time.monotonic() + 30
    while not ecs.list_container_instances(cluster=name)["containerInstanceArns"]:
        assert time.monotonic() < deadline, f"dev agent did not join {name}"
        time.sleep(0.05)
    return name


# ---------------------------------------------------------------------------
# Additions for the service suites (test_services*.py, test_terraform.py)
# ---------------------------------------------------------------------------

TASK_ARN_LABEL = "com.amazonaws.ecs.task-arn"
FAMILY_LABEL = "com.amazonaws.ecs.task-definition-family"


def running_containers(cluster: str, family: str | None = None) -> list[str]:
    """Ids of the *running* Docker containers of `cluster` (and of task definition family
    `family`, if given), found by the labels berth's agent puts on task containers."""
    args = ["ps", "-q", "--no-trunc", "--filter", f"label={CLUSTER_LABEL}={cluster}"]
    if family is not None:
        args += ["--filter", f"label={FAMILY_LABEL}={family}"]
    out = docker(*args, check=False)
    return out.stdout.split()


def boto3_ecs(url: str):
    """An ECS client for `url` configured like the session's `ecs` fixture."""
    return boto3.client(
        "ecs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


# `berth dev` options for the service suites. ECS counts a RUNNING task without container
# health checks towards minimumHealthyPercent only after 40 s (DeploymentConfiguration,
# botocore model); berth makes that delay configurable, and the service suites shorten it so
# that a rollout of health-check-less busybox tasks takes seconds, not minutes.
SERVICE_DEV_ARGS = ["--service-task-settle-secs", "2"]


def unique_namer(run_id: str, request):
    """The `unique_name` fixture's factory, for a given run id. Unlike `unique_name`, the
    names of parametrized tests differ (a hash of the test id follows the truncated name)."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    base = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:32].strip("-") + "-" + digest
    counter = iter(range(1000))

    def make(kind: str = "") -> str:
        suffix = f"-{kind}" if kind else ""
        return f"{run_id}-{base}{suffix}-{next(counter)}"

    return make


@pytest.fixture(scope="session")
def services_berth(tmp_path_factory):
    """One `berth dev` for the service suites (SERVICE_DEV_ARGS), shared by the session.
    test_services*.py point their `ecs`, `berth_url` and `unique_name` at it."""
    server = BerthDev(
        tmp_path_factory.mktemp("berth-services"),
        f"pys{uuid.uuid4().hex[:8]}",
        extra_args=SERVICE_DEV_ARGS + INSECURE_ARGS,
    )
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()
        server.remove_containers()


@pytest.fixture
def fresh_berth_dev(tmp_path_factory):
    """A `berth dev` of this test's own (its own store, agent and run id; SERVICE_DEV_ARGS),
    for tests that need a clean account (Terraform). Stopped, and its containers removed, at
    teardown."""
    run_id = f"pyf{uuid.uuid4().hex[:8]}"
    server = BerthDev(
        tmp_path_factory.mktemp("berth-fresh"), run_id, extra_args=SERVICE_DEV_ARGS + INSECURE_ARGS
    )
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()
        server.remove_containers()


# ---------------------------------------------------------------------------
# Additions for the identity suites (test_iam*.py, test_secrets.py)
# ---------------------------------------------------------------------------

# The service and Terraform suites sign with "x"/"x" (their AWS CLI environment and
# provider blocks say so): their servers accept any well-formed signature as the root.
INSECURE_ARGS = ["--insecure-any-credentials"]


def read_credentials(path: Path) -> tuple[str, str]:
    """(access key id, secret) of the `default` profile of an AWS credentials file."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["default"]
    return section["aws_access_key_id"], section["aws_secret_access_key"]


def aws_client(service: str, url: str, key: str, secret: str, token: str | None = None):
    """A boto3 client for `url` signing with the given credentials, without retries."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    """A `berth server` (control plane only, auth on) for the identity suites."""
    server = BerthDev(
        tmp_path_factory.mktemp("berth-auth"), f"pya{uuid.uuid4().hex[:8]}", command="server"
    )
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()

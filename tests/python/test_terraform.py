"""berth through the unmodified Terraform AWS provider.

Each test copies one directory of tests/terraform/ to a temporary directory, starts a
`berth dev` of its own (`fresh_berth_dev`), and runs terraform with:
  - a CLI config whose provider_installation uses the filesystem mirror (no network);
    the mirror is /opt/tf-plugins, or $BERTH_TF_PLUGINS;
  - TF_LOG=DEBUG into one log file per step, so a failure report shows the exact ECS
    requests berth rejected (the provider logs every request and response body).

Skipped, with the reason, when terraform or the provider mirror is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, boto3_ecs, running_containers

TF_DIR = REPO / "tests" / "terraform"
MIRROR = Path(os.environ.get("BERTH_TF_PLUGINS", "/opt/tf-plugins"))
AWS_PROVIDER = MIRROR / "registry.terraform.io" / "hashicorp" / "aws"


def _skip_reason() -> str | None:
    if shutil.which("terraform") is None:
        return "terraform is not installed (needed for the Terraform compatibility tests)"
    if not AWS_PROVIDER.is_dir() or not any(AWS_PROVIDER.iterdir()):
        return (
            f"no hashicorp/aws provider in the filesystem mirror {MIRROR} "
            "(set BERTH_TF_PLUGINS to a mirror holding registry.terraform.io/hashicorp/aws)"
        )
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


class Terraform:
    """One working copy of a tests/terraform/<dir> and the terraform runs in it."""

    def __init__(self, name: str, tmp: Path, endpoint: str, variables: dict[str, str]):
        self.dir = tmp / name
        shutil.copytree(TF_DIR / name, self.dir)
        self.logs = tmp / "logs"
        self.logs.mkdir()
        cli_config = tmp / "terraformrc"
        cli_config.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n'
            "}\n"
        )
        self.env = dict(os.environ)
        self.env.update(
            TF_CLI_CONFIG_FILE=str(cli_config),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TF_LOG="DEBUG",
            TF_DATA_DIR=str(self.dir / ".terraform"),
        )
        for k in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            self.env.pop(k, None)
        self.variables = {"endpoint": endpoint, **variables}
        self.step = 0

    def var_args(self) -> list[str]:
        return [f"-var={k}={v}" for k, v in self.variables.items()]

    def run(self, *args: str, codes=(0,), timeout: int = 300) -> subprocess.CompletedProcess:
        self.step += 1
        log = self.logs / f"{self.step:02d}-{args[0]}.log"
        env = dict(self.env, TF_LOG_PATH=str(log))
        out = subprocess.run(
            ["terraform", *args],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if out.returncode not in codes:
            pytest.fail(
                f"terraform {' '.join(args)} exited {out.returncode} (expected {codes})\n"
                f"--- stdout (tail) ---\n{_tail(out.stdout)}\n"
                f"--- stderr (tail) ---\n{_tail(out.stderr)}\n"
                f"--- ECS requests that failed (from {log}) ---\n{berth_errors(log)}"
            )
        return out

    def init(self) -> None:
        self.run("init", "-input=false", "-no-color")

    def apply(self) -> subprocess.CompletedProcess:
        return self.run("apply", "-auto-approve", "-input=false", "-no-color", *self.var_args())

    def plan_is_empty(self) -> None:
        """`terraform plan -detailed-exitcode` must exit 0 (no changes); on exit 2 the
        test fails showing the diff."""
        out = self.run(
            "plan", "-detailed-exitcode", "-input=false", "-no-color", *self.var_args(), codes=(0, 2)
        )
        if out.returncode == 2:
            pytest.fail(
                "terraform plan after apply is not empty (berth's answers differ from what "
                f"was applied):\n{_diff_lines(out.stdout)}"
            )

    def destroy(self) -> None:
        self.run("destroy", "-auto-approve", "-input=false", "-no-color", *self.var_args())

    def output(self) -> dict:
        out = self.run("output", "-json", "-no-color")
        return {k: v["value"] for k, v in json.loads(out.stdout).items()}


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _diff_lines(plan: str) -> str:
    keep = [
        line
        for line in plan.splitlines()
        if re.match(r"^\s*[~+-]|^\s*#|Plan:|^\s+\S.*->", line)
    ]
    return "\n".join(keep) or plan


# The AWS SDK for Go v2 as logged by the provider at TF_LOG=DEBUG: each log entry starts with
# a timestamp; "HTTP Request Sent" / "HTTP Response Received" entries carry key=value fields
# (rpc.method, tf_req_id, http.status_code) and the body on "  | " continuation lines.
_ENTRY_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _entries(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if _ENTRY_START.match(line) or not out:
            out.append(line)
        else:
            out[-1] += "\n" + line
    return out


def _field(entry: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\"[^\"]*\"|\S+)", entry)
    return m.group(1).strip('"') if m else None


def _body(entry: str) -> str:
    return "\n".join(ln[4:] for ln in entry.splitlines() if ln.startswith("  | "))


def berth_errors(log: Path, limit: int = 10) -> str:
    """The ECS request/response pairs of a TF_LOG=DEBUG file whose HTTP status was >= 400."""
    try:
        entries = _entries(log.read_text(errors="replace").splitlines())
    except OSError:
        return "(no log)"
    requests: dict[tuple, str] = {}
    found = []
    for e in entries:
        if "HTTP Request Sent" in e:
            requests[(_field(e, "tf_req_id"), _field(e, "rpc.method"))] = _body(e)
        elif "HTTP Response Received" in e:
            status = _field(e, "http.status_code")
            if status and status.isdigit() and int(status) >= 400:
                method = _field(e, "rpc.method")
                request = requests.get((_field(e, "tf_req_id"), method), "?")
                found.append(
                    f"{method} -> HTTP {status}\n  request:  {request[:2000]}\n"
                    f"  response: {_body(e)[:2000]}"
                )
    if not found:
        hits = [e.splitlines()[0][:500] for e in entries if re.search(r"Exception|api error", e)]
        return "\n".join(hits[-limit:]) or "(no failed ECS request in the log)"
    return "\n\n".join(found[-limit:])


def ecs_calls(log: Path) -> list[str]:
    """The ECS actions a terraform step called, in order (for reports)."""
    try:
        entries = _entries(log.read_text(errors="replace").splitlines())
    except OSError:
        return []
    return [_field(e, "rpc.method") or "?" for e in entries if "HTTP Request Sent" in e]


@pytest.fixture
def tf_factory(fresh_berth_dev, tmp_path):
    def make(directory: str, **variables: str) -> Terraform:
        tf = Terraform(directory, tmp_path, fresh_berth_dev.url, variables)
        tf.init()
        return tf

    return make


def test_terraform_cluster_and_task_definition_plan_is_empty(tf_factory, fresh_berth_dev):
    name = f"{fresh_berth_dev.run_id}-tf"
    tf = tf_factory("cluster_taskdef", name=name)
    tf.apply()
    tf.plan_is_empty()
    ecs = boto3_ecs(fresh_berth_dev.url)
    [cluster] = ecs.describe_clusters(clusters=[name], include=["TAGS"])["clusters"]
    assert cluster["status"] == "ACTIVE"
    assert {t["key"]: t["value"] for t in cluster.get("tags", [])} == {"team": "berth"}
    td = ecs.describe_task_definition(taskDefinition=f"{name}-web")["taskDefinition"]
    assert td["containerDefinitions"][0]["healthCheck"]["interval"] == 5
    tf.destroy()
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"


def test_terraform_service_apply_plan_update_destroy(tf_factory, fresh_berth_dev):
    name = f"{fresh_berth_dev.run_id}-svc"
    tf = tf_factory("service", name=name, desired_count="2")
    tf.apply()
    ecs = boto3_ecs(fresh_berth_dev.url)

    svc = ecs.describe_services(cluster=name, services=[name], include=["TAGS"])["services"][0]
    assert svc["status"] == "ACTIVE"
    assert (svc["desiredCount"], svc["runningCount"]) == (2, 2)
    assert svc["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }
    assert [(s["type"], s["field"].lower()) for s in svc["placementStrategy"]] == [
        ("binpack", "memory")
    ]
    assert {t["key"]: t["value"] for t in svc.get("tags", [])} == {"team": "berth"}
    assert tf.output()["service_id"] == svc["serviceArn"]
    assert len(running_containers(name)) == 2

    tf.plan_is_empty()

    tf.variables["desired_count"] = "3"
    tf.apply()
    svc = ecs.describe_services(cluster=name, services=[name])["services"][0]
    assert (svc["desiredCount"], svc["runningCount"]) == (3, 3)
    assert len(svc["deployments"]) == 1
    tf.plan_is_empty()

    tf.destroy()
    try:
        gone = ecs.describe_services(cluster=name, services=[name])["services"]
    except ecs.exceptions.ClusterNotFoundException:
        gone = []  # the cluster went too
    assert all(s["status"] == "INACTIVE" for s in gone), gone
    assert running_containers(name) == []

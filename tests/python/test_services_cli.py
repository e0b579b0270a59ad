"""ECS services through the unmodified AWS CLI (`aws ecs ...` as a subprocess) against the
session's `berth dev`.

The CLI's waiters (`aws ecs wait services-stable` / `services-inactive`) poll every 15 s, as
defined in botocore's waiters-2.json. To keep the suite fast, the tests point AWS_DATA_PATH
at a copy of that file whose delays are 1 s: the acceptors (what "stable" and "inactive"
mean) are botocore's own, unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import botocore
import pytest

from conftest import boto3_ecs, running_containers, unique_namer

BUSYBOX = "berth-test/busybox:latest"
SLEEP = "trap 'exit 0' TERM; sleep 3600 & wait"

pytestmark = pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI (aws) is not installed")


# This module runs against the service suites' own `berth dev` (conftest.services_berth,
# started with SERVICE_DEV_ARGS); these overrides point the conftest fixtures (`cluster`
# uses `ecs` and `unique_name`) at it.
@pytest.fixture(scope="module")
def berth_url(services_berth) -> str:
    return services_berth.url


@pytest.fixture(scope="module")
def ecs(services_berth):
    return boto3_ecs(services_berth.url)


@pytest.fixture
def unique_name(services_berth, request):
    return unique_namer(services_berth.run_id, request)


@pytest.fixture(scope="module")
def fast_waiters(tmp_path_factory) -> Path:
    """A botocore data path holding ECS's waiters-2.json with 1 s delays."""
    src_dir = Path(botocore.__file__).parent / "data" / "ecs"
    [version] = [p.name for p in src_dir.iterdir() if p.is_dir()]
    waiters = json.loads((src_dir / version / "waiters-2.json").read_text())
    for w in waiters["waiters"].values():
        w["delay"] = 1
        w["maxAttempts"] = 90
    root = tmp_path_factory.mktemp("aws-data")
    (root / "ecs" / version).mkdir(parents=True)
    (root / "ecs" / version / "waiters-2.json").write_text(json.dumps(waiters))
    return root


@pytest.fixture
def aws(berth_url, fast_waiters):
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_DATA_PATH=str(fast_waiters),
        AWS_PAGER="",
        AWS_MAX_ATTEMPTS="1",
    )
    env.pop("AWS_PROFILE", None)

    def run(*args: str, check: bool = True, timeout: int = 150) -> subprocess.CompletedProcess:
        cmd = ["aws", "--endpoint-url", berth_url, "--output", "json", "ecs", *args]
        out = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and out.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stderr}\n{out.stdout}")
        return out

    def run_json(*args: str):
        out = run(*args)
        return json.loads(out.stdout) if out.stdout.strip() else None

    run.json = run_json
    return run


def test_cli_service_lifecycle(aws, cluster, unique_name, tmp_path):
    family, name = unique_name("td"), unique_name("svc")
    td_file = tmp_path / "td.json"
    td_file.write_text(
        json.dumps(
            {
                "family": family,
                "containerDefinitions": [
                    {
                        "name": "main",
                        "image": BUSYBOX,
                        "command": ["sh", "-c", SLEEP],
                        "memory": 32,
                        "cpu": 16,
                        "stopTimeout": 2,
                    }
                ],
            }
        )
    )
    td1 = aws.json("register-task-definition", "--cli-input-json", f"file://{td_file}")[
        "taskDefinition"
    ]["taskDefinitionArn"]

    created = aws.json(
        "create-service",
        "--cluster", cluster,
        "--service-name", name,
        "--task-definition", family,
        "--desired-count", "2",
        "--deployment-configuration",
        "maximumPercent=200,minimumHealthyPercent=100,"
        "deploymentCircuitBreaker={enable=true,rollback=true}",
        "--tags", "key=team,value=berth",
        "--propagate-tags", "SERVICE",
        "--enable-ecs-managed-tags",
    )["service"]
    assert created["serviceArn"] == f"arn:aws:ecs:us-east-1:000000000000:service/{cluster}/{name}"
    assert created["taskDefinition"] == td1
    assert created["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }

    aws("wait", "services-stable", "--cluster", cluster, "--services", name)
    # The steady-state event follows the counts the waiter looks at; allow it a moment.
    deadline = time.monotonic() + 15
    while True:
        events = aws.json(
            "describe-services", "--cluster", cluster, "--services", name,
            "--query", "services[0].events[:5]",
        )
        assert isinstance(events, list) and 1 <= len(events) <= 5
        assert all(set(e) >= {"id", "createdAt", "message"} for e in events), events
        steady = f"(service {name}) has reached a steady state."
        if any(e["message"] == steady for e in events) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(e["message"] == steady for e in events), events
    counts = aws.json(
        "describe-services", "--cluster", cluster, "--services", name,
        "--query", "services[0].[desiredCount,runningCount,pendingCount,length(deployments)]",
    )
    assert counts == [2, 2, 0, 1]

    tasks = aws.json("list-tasks", "--cluster", cluster, "--service-name", name)["taskArns"]
    assert len(tasks) == 2
    tags = aws.json(
        "describe-tasks", "--cluster", cluster, "--tasks", *tasks, "--include", "TAGS",
        "--query", "tasks[].tags",
    )
    for t in tags:
        kv = {x["key"]: x["value"] for x in t}
        assert kv == {"team": "berth", "aws:ecs:clusterName": cluster, "aws:ecs:serviceName": name}

    # A new revision, rolled out; then a scale-out.
    td_file.write_text(
        json.dumps(
            {
                **json.loads(td_file.read_text()),
                "containerDefinitions": [
                    {
                        "name": "main",
                        "image": BUSYBOX,
                        "command": ["sh", "-c", SLEEP],
                        "memory": 32,
                        "cpu": 16,
                        "stopTimeout": 2,
                        "environment": [{"name": "REV", "value": "2"}],
                    }
                ],
            }
        )
    )
    td2 = aws.json("register-task-definition", "--cli-input-json", f"file://{td_file}")[
        "taskDefinition"
    ]["taskDefinitionArn"]
    updated = aws.json(
        "update-service", "--cluster", cluster, "--service", name, "--task-definition", td2
    )["service"]
    assert updated["taskDefinition"] == td2
    assert len(updated["deployments"]) == 2
    aws("wait", "services-stable", "--cluster", cluster, "--services", name)
    deadline = time.monotonic() + 15
    while True:
        deps = aws.json(
            "describe-services", "--cluster", cluster, "--services", name,
            "--query", "services[0].deployments[].[status,taskDefinition,rolloutState]",
        )
        if deps == [["PRIMARY", td2, "COMPLETED"]] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert deps == [["PRIMARY", td2, "COMPLETED"]]

    aws.json("update-service", "--cluster", cluster, "--service", name, "--desired-count", "3")
    aws("wait", "services-stable", "--cluster", cluster, "--services", name)
    assert len(running_containers(cluster, family)) == 3

    sds = aws.json("list-service-deployments", "--cluster", cluster, "--service", name)
    assert len(sds["serviceDeployments"]) == 2

    # Without --force a scaled-up service cannot be deleted.
    out = aws("delete-service", "--cluster", cluster, "--service", name, check=False)
    assert out.returncode != 0
    assert "InvalidParameterException" in out.stderr, out.stderr

    gone = aws.json("delete-service", "--cluster", cluster, "--service", name, "--force")["service"]
    assert gone["status"] in ("DRAINING", "INACTIVE")
    aws("wait", "services-inactive", "--cluster", cluster, "--services", name)
    status = aws.json(
        "describe-services", "--cluster", cluster, "--services", name, "--query", "services[0].status"
    )
    assert status == "INACTIVE"
    assert aws.json("list-services", "--cluster", cluster)["serviceArns"] == []
    assert running_containers(cluster, family) == []


def test_cli_errors(aws, cluster, unique_name):
    missing = unique_name("nope")
    out = aws("update-service", "--cluster", cluster, "--service", missing, "--desired-count", "1", check=False)
    assert out.returncode != 0
    assert "ServiceNotFoundException" in out.stderr, out.stderr

    out = aws("delete-service", "--cluster", cluster, "--service", missing, check=False)
    assert out.returncode != 0
    assert "ServiceNotFoundException" in out.stderr, out.stderr

    out = aws("list-tasks", "--cluster", cluster, "--service-name", missing, check=False)
    assert out.returncode != 0
    assert "ServiceNotFoundException" in out.stderr, out.stderr

    described = aws.json("describe-services", "--cluster", cluster, "--services", missing)
    assert described["services"] == []
    assert [f["reason"] for f in described["failures"]] == ["MISSING"]

    # A waiter on a MISSING service fails at once (failure acceptor), exit code 255.
    out = aws("wait", "services-stable", "--cluster", cluster, "--services", missing, check=False)
    assert out.returncode == 255, (out.returncode, out.stderr)
    assert "failure" in out.stderr.lower(), out.stderr

    out = aws(
        "create-service", "--cluster", cluster, "--service-name", unique_name("svc"),
        "--task-definition", unique_name("no-family"), "--desired-count", "1", check=False,
    )
    assert out.returncode != 0
    assert "ClientException" in out.stderr or "InvalidParameterException" in out.stderr, out.stderr
    assert aws.json("list-services", "--cluster", cluster)["serviceArns"] == []


def test_cli_list_services_paginates(aws, cluster, unique_name, tmp_path):
    family = unique_name("td")
    aws.json(
        "register-task-definition", "--family", family, "--container-definitions",
        json.dumps([{"name": "main", "image": BUSYBOX, "memory": 16, "command": ["sh", "-c", SLEEP]}]),
    )
    names = {unique_name("svc") for _ in range(4)}
    for n in names:
        aws.json("create-service", "--cluster", cluster, "--service-name", n,
                 "--task-definition", family, "--desired-count", "0")
    # --page-size 1 makes the CLI follow nextToken three times.
    listed = aws.json("list-services", "--cluster", cluster, "--page-size", "1")["serviceArns"]
    assert {a.rsplit("/", 1)[1] for a in listed} == names
    for n in names:
        aws.json("delete-service", "--cluster", cluster, "--service", n)

"""boto3 against a real `berth dev` (control plane + Docker agent) on real Docker.

These tests check that berth speaks ECS well enough for botocore: every response
must parse against botocore's ECS service model, errors must map to the modelled
exception classes, and boto3's waiters must understand task states.
"""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

from conftest import docker_inspect

BUSYBOX = "berth-test/busybox:latest"
SLEEP_CMD = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
POLL_TIMEOUT_S = 60


def sleeper_container(**extra) -> dict:
    container = {
        "name": "main",
        "image": BUSYBOX,
        "command": SLEEP_CMD,
        "memory": 32,
        "cpu": 64,
        "stopTimeout": 2,
        "essential": True,
        "environment": [
            {"name": "GREETING", "value": "hello berth"},
            {"name": "EMPTYISH", "value": "x=y"},
        ],
    }
    container.update(extra)
    return container


def register_sleeper(ecs, family: str, **extra) -> dict:
    return ecs.register_task_definition(
        family=family, containerDefinitions=[sleeper_container(**extra)]
    )["taskDefinition"]


def wait_for_tasks(ecs, cluster: str, arns: list[str], status: str, timeout=POLL_TIMEOUT_S):
    """Polls DescribeTasks until every task has lastStatus == status; returns the tasks."""
    deadline = time.monotonic() + timeout
    while True:
        resp = ecs.describe_tasks(cluster=cluster, tasks=arns)
        assert resp["failures"] == []
        tasks = resp["tasks"]
        assert sorted(t["taskArn"] for t in tasks) == sorted(arns)
        if all(t["lastStatus"] == status for t in tasks):
            return tasks
        if status != "STOPPED":
            stopped = [t for t in tasks if t["lastStatus"] == "STOPPED"]
            assert not stopped, f"task stopped while waiting for {status}: {stopped}"
        if time.monotonic() > deadline:
            pytest.fail(
                f"tasks not {status} after {timeout}s: "
                + ", ".join(f"{t['taskArn']}={t['lastStatus']}" for t in tasks)
            )
        time.sleep(0.5)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


# ---------------------------------------------------------------------------
# clusters
# ---------------------------------------------------------------------------


def test_create_and_describe_clusters(ecs, unique_name):
    name = unique_name("c")
    created = ecs.create_cluster(clusterName=name)["cluster"]
    assert created["clusterName"] == name
    assert created["status"] == "ACTIVE"
    arn = created["clusterArn"]
    assert arn == f"arn:aws:ecs:us-east-1:000000000000:cluster/{name}"

    # By name and by ARN (one cluster, described once); an unknown cluster is a failure,
    # not an error.
    resp = ecs.describe_clusters(clusters=[name, arn, f"{name}-nope"])
    assert [c["clusterArn"] for c in resp["clusters"]] == [arn]
    assert [c["clusterName"] for c in resp["clusters"]] == [name]
    assert len(resp["failures"]) == 1
    assert resp["failures"][0]["reason"] == "MISSING"
    assert resp["failures"][0]["arn"].endswith(f"cluster/{name}-nope")

    # CreateCluster is idempotent for an existing ACTIVE cluster.
    again = ecs.create_cluster(clusterName=name)["cluster"]
    assert again["clusterArn"] == arn

    assert arn in ecs.list_clusters()["clusterArns"]

    # The dev agent joins every cluster on its own.
    deadline = time.monotonic() + 30
    while True:
        c = ecs.describe_clusters(clusters=[name])["clusters"][0]
        if c["registeredContainerInstancesCount"] == 1:
            break
        assert time.monotonic() < deadline, f"dev agent did not join {name}: {c}"
        time.sleep(0.5)
    instances = ecs.list_container_instances(cluster=name)["containerInstanceArns"]
    assert len(instances) == 1
    described = ecs.describe_container_instances(cluster=name, containerInstances=instances)
    assert described["failures"] == []
    ci = described["containerInstances"][0]
    assert ci["status"] == "ACTIVE"
    assert ci["agentConnected"] is True
    cpu = [r for r in ci["registeredResources"] if r["name"] == "CPU"]
    assert cpu and cpu[0]["integerValue"] > 0


def test_cluster_tags(ecs, unique_name):
    name = unique_name("c")
    arn = ecs.create_cluster(clusterName=name, tags=[{"key": "team", "value": "infra"}])[
        "cluster"
    ]["clusterArn"]

    def tags() -> dict:
        resp = ecs.list_tags_for_resource(resourceArn=arn)
        return {t["key"]: t["value"] for t in resp["tags"]}

    assert tags() == {"team": "infra"}

    ecs.tag_resource(
        resourceArn=arn,
        tags=[{"key": "env", "value": "test"}, {"key": "team", "value": "platform"}],
    )
    assert tags() == {"team": "platform", "env": "test"}

    ecs.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert tags() == {"env": "test"}

    described = ecs.describe_clusters(clusters=[name], include=["TAGS"])["clusters"][0]
    assert {t["key"]: t["value"] for t in described.get("tags", [])} == {"env": "test"}


# ---------------------------------------------------------------------------
# task definitions
# ---------------------------------------------------------------------------


def test_task_definitions(ecs, unique_name):
    family = unique_name("td")
    td1 = register_sleeper(ecs, family)
    assert td1["family"] == family
    assert td1["revision"] == 1
    assert td1["status"] == "ACTIVE"
    assert td1["taskDefinitionArn"] == (
        f"arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:1"
    )
    c = td1["containerDefinitions"][0]
    assert c["name"] == "main"
    assert c["image"] == BUSYBOX
    assert c["command"] == SLEEP_CMD
    assert (c["memory"], c["cpu"], c["stopTimeout"], c["essential"]) == (32, 64, 2, True)
    assert {e["name"]: e["value"] for e in c["environment"]} == {
        "GREETING": "hello berth",
        "EMPTYISH": "x=y",
    }

    td2 = register_sleeper(ecs, family, memory=48)
    assert td2["revision"] == 2

    # Family alone resolves to the latest ACTIVE revision; family:rev and ARN are exact.
    latest = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    assert latest["taskDefinitionArn"] == td2["taskDefinitionArn"]
    assert latest["containerDefinitions"][0]["memory"] == 48
    first = ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert first["containerDefinitions"][0]["memory"] == 32
    by_arn = ecs.describe_task_definition(taskDefinition=td1["taskDefinitionArn"])
    assert by_arn["taskDefinition"]["revision"] == 1

    listed = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    assert listed == [td1["taskDefinitionArn"], td2["taskDefinitionArn"]]
    desc = ecs.list_task_definitions(familyPrefix=family, sort="DESC")["taskDefinitionArns"]
    assert desc == [td2["taskDefinitionArn"], td1["taskDefinitionArn"]]
    families = ecs.list_task_definition_families(familyPrefix=family)["families"]
    assert families == [family]

    # The paginator follows nextToken (maxResults 1 forces two pages).
    pages = list(
        ecs.get_paginator("list_task_definitions").paginate(
            familyPrefix=family, PaginationConfig={"PageSize": 1}
        )
    )
    assert [a for p in pages for a in p["taskDefinitionArns"]] == listed
    assert len(pages) >= 2

    gone = ecs.deregister_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert gone["status"] == "INACTIVE"
    active = ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")
    assert active["taskDefinitionArns"] == [td2["taskDefinitionArn"]]


# ---------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------


def test_run_list_and_stop_tasks(ecs, cluster, unique_name):
    family = unique_name("td")
    td = register_sleeper(ecs, family)
    started_by = "pytest-boto3"

    resp = ecs.run_task(
        cluster=cluster, taskDefinition=family, count=2, startedBy=started_by
    )
    assert resp["failures"] == []
    assert len(resp["tasks"]) == 2
    for t in resp["tasks"]:
        assert t["taskDefinitionArn"] == td["taskDefinitionArn"]
        assert t["clusterArn"].endswith(f"cluster/{cluster}")
        assert t["desiredStatus"] == "RUNNING"
        assert t["launchType"] == "EC2"
        assert t["startedBy"] == started_by
    arns = [t["taskArn"] for t in resp["tasks"]]
    assert len(set(arns)) == 2

    tasks = wait_for_tasks(ecs, cluster, arns, "RUNNING")
    for t in tasks:
        container = t["containers"][0]
        assert container["name"] == "main"
        assert container["lastStatus"] == "RUNNING"
        runtime_id = container.get("runtimeId")
        assert runtime_id, f"no runtimeId on a RUNNING container: {container}"
        info = docker_inspect(runtime_id)
        assert info is not None, f"docker has no container {runtime_id}"
        assert info["State"]["Running"] is True
        labels = info["Config"]["Labels"]
        assert labels["com.amazonaws.ecs.task-arn"] == t["taskArn"]
        assert labels["com.amazonaws.ecs.cluster"] == cluster
        assert "GREETING=hello berth" in info["Config"]["Env"]
        assert "EMPTYISH=x=y" in info["Config"]["Env"]
        assert info["Config"]["Cmd"] == SLEEP_CMD
        assert info["HostConfig"]["Memory"] == 32 * 1024 * 1024
        assert info["HostConfig"]["CpuShares"] == 64
        assert "startedAt" in t

    # ListTasks filters.
    def listed(**kw) -> set[str]:
        return set(ecs.list_tasks(cluster=cluster, **kw)["taskArns"])

    assert listed() == set(arns)
    assert listed(family=family) == set(arns)
    assert listed(family=f"{family}-other") == set()
    assert listed(startedBy=started_by) == set(arns)
    assert listed(startedBy="someone-else") == set()
    assert listed(desiredStatus="RUNNING") == set(arns)
    assert listed(desiredStatus="STOPPED") == set()

    # StopTask: the response already says desiredStatus STOPPED.
    victim, survivor = arns
    stopped = ecs.stop_task(cluster=cluster, task=victim, reason="pytest says stop")["task"]
    assert stopped["taskArn"] == victim
    assert stopped["desiredStatus"] == "STOPPED"

    [final] = wait_for_tasks(ecs, cluster, [victim], "STOPPED", timeout=30)
    assert final["stoppedReason"] == "pytest says stop"
    assert final["stopCode"] == "UserInitiated"
    assert "stoppedAt" in final
    assert final["containers"][0]["lastStatus"] == "STOPPED"
    # The trap in the command makes SIGTERM a clean exit.
    assert final["containers"][0]["exitCode"] == 0
    victim_cid = final["containers"][0]["runtimeId"]
    info = docker_inspect(victim_cid)
    assert info is None or info["State"]["Running"] is False

    # Without desiredStatus, ListTasks lists RUNNING (desired) tasks only, as in ECS.
    assert listed() == {survivor}
    assert listed(desiredStatus="STOPPED") == {victim}
    assert listed(desiredStatus="RUNNING") == {survivor}
    # The other task is unaffected.
    [still] = ecs.describe_tasks(cluster=cluster, tasks=[survivor])["tasks"]
    assert still["lastStatus"] == "RUNNING"

    ecs.stop_task(cluster=cluster, task=survivor)
    wait_for_tasks(ecs, cluster, [survivor], "STOPPED", timeout=30)


def test_essential_container_exit_stops_task(ecs, cluster, unique_name):
    family = unique_name("td")
    register_sleeper(ecs, family, command=["sh", "-c", "exit 3"])
    resp = ecs.run_task(cluster=cluster, taskDefinition=family)
    assert resp["failures"] == []
    arn = resp["tasks"][0]["taskArn"]

    [task] = wait_for_tasks(ecs, cluster, [arn], "STOPPED")
    assert task["desiredStatus"] == "STOPPED"
    assert task["stopCode"] == "EssentialContainerExited"
    assert task.get("stoppedReason")
    assert task["containers"][0]["lastStatus"] == "STOPPED"
    assert task["containers"][0]["exitCode"] == 3


def test_waiters(ecs, cluster, unique_name):
    family = unique_name("td")
    register_sleeper(ecs, family)
    arns = [t["taskArn"] for t in ecs.run_task(cluster=cluster, taskDefinition=family)["tasks"]]
    assert len(arns) == 1
    fast = {"Delay": 1, "MaxAttempts": POLL_TIMEOUT_S}

    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=arns, WaiterConfig=fast)
    [task] = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    assert task["lastStatus"] == "RUNNING"

    ecs.stop_task(cluster=cluster, task=arns[0])
    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=arns, WaiterConfig=fast)
    [task] = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    assert task["lastStatus"] == "STOPPED"

    # tasks_running fails fast (failure acceptor) on a task berth reports MISSING.
    missing = arns[0].rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"
    with pytest.raises(botocore.exceptions.WaiterError) as excinfo:
        ecs.get_waiter("tasks_running").wait(
            cluster=cluster, tasks=[missing], WaiterConfig={"Delay": 1, "MaxAttempts": 3}
        )
    assert "failure" in str(excinfo.value).lower()
    assert excinfo.value.last_response["failures"][0]["reason"] == "MISSING"


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_unknown_cluster_is_cluster_not_found(ecs):
    with pytest.raises(ecs.exceptions.ClusterNotFoundException) as excinfo:
        ecs.describe_tasks(cluster="nope", tasks=["x"])
    assert error_code(excinfo) == "ClusterNotFoundException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_task_definition_is_client_exception(ecs, cluster, unique_name):
    with pytest.raises(ecs.exceptions.ClientException) as excinfo:
        ecs.run_task(cluster=cluster, taskDefinition=unique_name("no-such-family"))
    assert error_code(excinfo) == "ClientException"
    assert excinfo.value.response["Error"]["Message"]
    # Nothing was started.
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []


def test_fargate_and_awsvpc_are_unsupported(ecs, cluster, unique_name):
    family = unique_name("td")
    register_sleeper(ecs, family)
    with pytest.raises(ecs.exceptions.UnsupportedFeatureException) as excinfo:
        ecs.run_task(cluster=cluster, taskDefinition=family, launchType="FARGATE")
    assert error_code(excinfo) == "UnsupportedFeatureException"

    vpc_family = unique_name("td-vpc")
    ecs.register_task_definition(
        family=vpc_family, networkMode="awsvpc", containerDefinitions=[sleeper_container()]
    )
    with pytest.raises(ecs.exceptions.UnsupportedFeatureException):
        ecs.run_task(cluster=cluster, taskDefinition=vpc_family)
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []

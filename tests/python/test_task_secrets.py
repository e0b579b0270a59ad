"""Secrets through boto3: a Secrets Manager secret (JSON key) in a RunTask'd container's
environment, read back over the container's HTTP port; never in DescribeTasks."""

from __future__ import annotations

import json
import time
import urllib.request

from conftest import aws_client

HTTP_IMAGE = "berth-test/http:latest"
ACCOUNT = "000000000000"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def wait_for(what, probe, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = probe()
        if ok:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last}")


def http_get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as e:
        return None, str(e)


def test_secret_reaches_the_container_environment(berth_dev, berth_url, ecs, cluster, unique_name):
    key, secret_key = berth_dev.credentials()
    sm = aws_client("secretsmanager", berth_url, key, secret_key)
    iam = aws_client("iam", berth_url, key, secret_key)
    password = f"pw-{unique_name()}"
    arn = sm.create_secret(
        Name=unique_name("db"), SecretString=json.dumps({"password": password})
    )["ARN"]
    role = unique_name("exec")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(
        RoleName=role,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}
                ],
            }
        ),
    )
    family = unique_name("td")
    ecs.register_task_definition(
        family=family,
        executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
        containerDefinitions=[
            {
                "name": "web",
                "image": HTTP_IMAGE,
                "memory": 32,
                "portMappings": [{"containerPort": 8080, "hostPort": 0}],
                "secrets": [{"name": "DB_PASSWORD", "valueFrom": f"{arn}:password::"}],
            }
        ],
    )
    task_arn = ecs.run_task(cluster=cluster, taskDefinition=family)["tasks"][0]["taskArn"]

    def running():
        t = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
        return t["lastStatus"] == "RUNNING", t

    task = wait_for("the task to run", running)
    port = task["containers"][0]["networkBindings"][0]["hostPort"]
    body = wait_for(
        "the container to answer",
        lambda: (lambda r: (r[0] == 200, r))(http_get(port, "/env/DB_PASSWORD")),
    )
    assert body == (200, password)
    described = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])
    assert password not in json.dumps(described, default=str)
    ecs.stop_task(cluster=cluster, task=task_arn)


def test_task_role_credentials_load_with_botocores_container_provider(
    berth_dev, berth_url, ecs, cluster, unique_name
):
    """The URI and token a task container gets are what botocore's own container credential
    provider accepts and loads; the credentials are allowed exactly what the role allows."""
    import botocore.credentials
    from botocore.exceptions import ClientError

    key, secret_key = berth_dev.credentials()
    iam = aws_client("iam", berth_url, key, secret_key)
    role = unique_name("task")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(
        RoleName=role,
        PolicyName="list",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"}],
            }
        ),
    )
    family = unique_name("td")
    ecs.register_task_definition(
        family=family,
        taskRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
        containerDefinitions=[
            {
                "name": "web",
                "image": HTTP_IMAGE,
                "memory": 32,
                "portMappings": [{"containerPort": 8080, "hostPort": 0}],
            }
        ],
    )
    task_arn = ecs.run_task(cluster=cluster, taskDefinition=family)["tasks"][0]["taskArn"]

    def running():
        t = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
        return t["lastStatus"] == "RUNNING", t

    port = wait_for("the task to run", running)["containers"][0]["networkBindings"][0]["hostPort"]
    env = {}
    for name in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        env[name] = wait_for(
            f"the container's {name}",
            lambda name=name: (lambda r: (r[0] == 200, r[1]))(http_get(port, f"/env/{name}")),
        )
    # Unmodified botocore: it refuses any plain-HTTP host but loopback and ECS's link-local
    # ones, then fetches with the token (the host reaches 169.254.170.2 as containers do).
    creds = botocore.credentials.ContainerProvider(environ=env).load()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA") and frozen.token
    as_role = aws_client("ecs", berth_url, frozen.access_key, frozen.secret_key, frozen.token)
    assert "clusterArns" in as_role.list_clusters()
    try:
        as_role.list_tasks(cluster=cluster)
        raise AssertionError("ListTasks should be denied to the role")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDeniedException"
        assert f"assumed-role/{role}/" in e.response["Error"]["Message"]
    ecs.stop_task(cluster=cluster, task=task_arn)

"""boto3 tests of the everyday ECS operations beyond clusters/tasks/services, and of the
places where berth follows ECS's exact behaviour. Named by operation."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

BUSYBOX = "berth-test/busybox:latest"


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def register(ecs, family: str, command: str = "trap 'exit 0' TERM; sleep 3600 & wait") -> str:
    return ecs.register_task_definition(
        family=family,
        containerDefinitions=[
            {
                "name": "main",
                "image": BUSYBOX,
                "memory": 32,
                "command": ["sh", "-c", command],
                "stopTimeout": 2,
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]


def instance_of(ecs, cluster: str) -> str:
    return ecs.list_container_instances(cluster=cluster)["containerInstanceArns"][0]


# --------------------------------------------------------------------- account settings


def test_put_account_setting_and_list_account_settings(ecs):
    try:
        put = ecs.put_account_setting(name="awsvpcTrunking", value="enabled")["setting"]
        assert put["name"] == "awsvpcTrunking"
        assert put["value"] == "enabled"
        assert put["principalArn"] == "arn:aws:iam::000000000000:root"
        assert put["type"] == "user"
        own = ecs.list_account_settings(name="awsvpcTrunking")["settings"]
        assert [(s["name"], s["value"]) for s in own] == [("awsvpcTrunking", "enabled")]
        effective = [
            s
            for page in ecs.get_paginator("list_account_settings").paginate(effectiveSettings=True)
            for s in page["settings"]
        ]
        names = {s["name"] for s in effective}
        assert {"containerInsights", "taskLongArnFormat", "tagResourceAuthorization"} <= names
        defaults = {s["name"]: s for s in effective}
        assert defaults["taskLongArnFormat"]["value"] == "enabled"
        assert defaults["taskLongArnFormat"]["type"] == "aws_managed"
    finally:
        ecs.delete_account_setting(name="awsvpcTrunking")
    assert ecs.list_account_settings(name="awsvpcTrunking")["settings"] == []


def test_list_account_settings_pages(ecs):
    first = ecs.list_account_settings(effectiveSettings=True, maxResults=4)
    assert len(first["settings"]) == 4
    second = ecs.list_account_settings(effectiveSettings=True, maxResults=4, nextToken=first["nextToken"])
    assert not {s["name"] for s in first["settings"]} & {s["name"] for s in second["settings"]}


def test_put_account_setting_refuses_bad_names_and_values(ecs):
    for name, value in [("noSuchSetting", "enabled"), ("containerInsights", "sometimes"), ("taskLongArnFormat", "disabled")]:
        with pytest.raises(ClientError) as e:
            ecs.put_account_setting(name=name, value=value)
        assert error_code(e) == "InvalidParameterException"


def test_put_account_setting_default_container_insights_applies_to_new_clusters(ecs, unique_name):
    ecs.put_account_setting_default(name="containerInsights", value="enabled")
    try:
        name = unique_name("insights")
        created = ecs.create_cluster(clusterName=name)["cluster"]
        assert {"name": "containerInsights", "value": "enabled"} in created["settings"]
        ecs.delete_cluster(cluster=name)
    finally:
        ecs.put_account_setting_default(name="containerInsights", value="disabled")


# --------------------------------------------------------------------- attributes


def test_put_attributes_list_attributes_delete_attributes(ecs, cluster):
    arn = instance_of(ecs, cluster)
    put = ecs.put_attributes(
        cluster=cluster, attributes=[{"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": arn}]
    )["attributes"]
    assert put[0]["targetId"] == arn
    listed = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")["attributes"]
    assert [(a["name"], a["value"], a["targetId"]) for a in listed] == [("stack", "prod", arn)]
    # Usable in placement at once.
    td = register(ecs, f"{cluster}-attr")
    ran = ecs.run_task(
        cluster=cluster, taskDefinition=td, placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == prod"}]
    )
    assert len(ran["tasks"]) == 1
    ecs.stop_task(cluster=cluster, task=ran["tasks"][0]["taskArn"])
    none = ecs.run_task(
        cluster=cluster, taskDefinition=td, placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == test"}]
    )
    assert none["tasks"] == [] and none["failures"]
    ecs.delete_attributes(cluster=cluster, attributes=[{"name": "stack", "targetId": arn}])
    assert ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")["attributes"] == []


def test_put_attributes_limits_and_errors(ecs, cluster):
    arn = instance_of(ecs, cluster)
    too_many = [{"name": f"a{i}", "value": "v", "targetId": arn} for i in range(11)]
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=too_many)
    assert error_code(e) == "AttributeLimitExceededException"
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(
            cluster=cluster,
            attributes=[{"name": "x", "value": "v", "targetId": arn.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"}],
        )
    assert error_code(e) == "TargetNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": "bad name!", "value": "v", "targetId": arn}])
    assert error_code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": "ecs.os-type", "value": "windows", "targetId": arn}])
    assert error_code(e) == "InvalidParameterException"
    assert ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="a0")["attributes"] == []


# --------------------------------------------------------------------- clusters


def test_update_cluster_and_describe_clusters_include(ecs, cluster):
    updated = ecs.update_cluster(
        cluster=cluster,
        settings=[{"name": "containerInsights", "value": "enhanced"}],
        configuration={"executeCommandConfiguration": {"logging": "NONE"}},
    )["cluster"]
    assert {"name": "containerInsights", "value": "enhanced"} in updated["settings"]
    assert updated["configuration"]["executeCommandConfiguration"]["logging"] == "NONE"
    plain = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert "settings" not in plain and "configuration" not in plain
    full = ecs.describe_clusters(clusters=[cluster], include=["SETTINGS", "CONFIGURATIONS", "STATISTICS", "ATTACHMENTS", "TAGS"])[
        "clusters"
    ][0]
    assert full["settings"] == [{"name": "containerInsights", "value": "enhanced"}]
    assert full["configuration"]["executeCommandConfiguration"]["logging"] == "NONE"
    stats = {s["name"]: s["value"] for s in full["statistics"]}
    assert stats["runningEC2TasksCount"] == "0" and "activeEC2ServiceCount" in stats
    assert full["attachments"] == []
    assert full["tags"] == []
    settings = ecs.update_cluster_settings(cluster=cluster, settings=[{"name": "containerInsights", "value": "disabled"}])
    assert settings["cluster"]["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(cluster=cluster, settings=[{"name": "nonsense", "value": "x"}])
    assert error_code(e) == "InvalidParameterException"


def test_cluster_counts_follow_tasks_and_services(ecs, cluster):
    td = register(ecs, f"{cluster}-count")
    task = ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[task], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert (c["runningTasksCount"], c["pendingTasksCount"], c["registeredContainerInstancesCount"]) == (1, 0, 1)
    ecs.stop_task(cluster=cluster, task=task)
    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[task], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["runningTasksCount"] == 0


# --------------------------------------------------------------------- container instances


def test_update_container_instances_state_draining_blocks_placement(ecs, cluster):
    arn = instance_of(ecs, cluster)
    out = ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn], status="DRAINING")
    assert out["containerInstances"][0]["status"] == "DRAINING"
    td = register(ecs, f"{cluster}-drain")
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=td)
    assert "No Container Instances" in e.value.response["Error"]["Message"]
    listed = ecs.list_container_instances(cluster=cluster, status="DRAINING")["containerInstanceArns"]
    assert listed == [arn]
    back = ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn], status="ACTIVE")
    assert back["containerInstances"][0]["status"] == "ACTIVE"
    missing = ecs.update_container_instances_state(
        cluster=cluster, containerInstances=["0123456789abcdef0123456789abcdef"], status="ACTIVE"
    )
    assert missing["failures"][0]["reason"] == "MISSING"
    with pytest.raises(ClientError) as e:
        ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn], status="INACTIVE")
    assert error_code(e) == "InvalidParameterException"


def test_update_container_agent_says_no_update_available(ecs, cluster):
    arn = instance_of(ecs, cluster)
    with pytest.raises(ClientError) as e:
        ecs.update_container_agent(cluster=cluster, containerInstance=arn)
    assert error_code(e) == "NoUpdateAvailableException"


# --------------------------------------------------------------------- task definitions


def test_delete_task_definitions_only_inactive(ecs, unique_name):
    family = unique_name("del")
    arn = register(ecs, family)
    refused = ecs.delete_task_definitions(taskDefinitions=[arn])
    assert refused["taskDefinitions"] == []
    assert "ACTIVE" in refused["failures"][0]["reason"]
    ecs.deregister_task_definition(taskDefinition=arn)
    deleted = ecs.delete_task_definitions(taskDefinitions=[arn])
    assert deleted["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS"
    listed = ecs.list_task_definitions(familyPrefix=family, status="DELETE_IN_PROGRESS")["taskDefinitionArns"]
    assert listed == [arn]
    with pytest.raises(ClientError) as e:
        ecs.delete_task_definitions(taskDefinitions=[family])
    assert error_code(e) == "ClientException"


# --------------------------------------------------------------------- task protection


def test_update_task_protection_and_get_task_protection(ecs, cluster):
    td = register(ecs, f"{cluster}-protect")
    task = ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]["taskArn"]
    out = ecs.update_task_protection(cluster=cluster, tasks=[task], protectionEnabled=True, expiresInMinutes=60)
    assert out["protectedTasks"][0]["protectionEnabled"] is True
    assert out["protectedTasks"][0]["expirationDate"]
    got = ecs.get_task_protection(cluster=cluster, tasks=[task])["protectedTasks"][0]
    assert got["protectionEnabled"] is True
    off = ecs.update_task_protection(cluster=cluster, tasks=[task], protectionEnabled=False)
    assert off["protectedTasks"][0]["protectionEnabled"] is False
    with pytest.raises(ClientError) as e:
        ecs.update_task_protection(cluster=cluster, tasks=[task], protectionEnabled=True, expiresInMinutes=5000)
    assert error_code(e) == "InvalidParameterException"
    missing = ecs.get_task_protection(cluster=cluster, tasks=[task.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"])
    assert missing["failures"][0]["reason"] == "MISSING"
    ecs.stop_task(cluster=cluster, task=task)


def test_protected_service_tasks_survive_scale_in(ecs, cluster):
    td = register(ecs, f"{cluster}-svcprot")
    ecs.create_service(cluster=cluster, serviceName="prot", taskDefinition=td, desiredCount=2)
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=["prot"], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    tasks = ecs.list_tasks(cluster=cluster, serviceName="prot")["taskArns"]
    ecs.update_task_protection(cluster=cluster, tasks=tasks, protectionEnabled=True, expiresInMinutes=60)
    ecs.update_service(cluster=cluster, service="prot", desiredCount=0)
    # Both protected: neither is stopped, however long the scheduler looks.
    for _ in range(3):
        svc = ecs.describe_services(cluster=cluster, services=["prot"])["services"][0]
        assert svc["runningCount"] == 2
    running = ecs.list_tasks(cluster=cluster, serviceName="prot")["taskArns"]
    assert sorted(running) == sorted(tasks)
    ecs.update_task_protection(cluster=cluster, tasks=tasks, protectionEnabled=False)
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=["prot"], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    ecs.delete_service(cluster=cluster, service="prot")


# --------------------------------------------------------------------- agent-facing operations


def test_discover_poll_endpoint(ecs, berth_url, cluster):
    out = ecs.discover_poll_endpoint(cluster=cluster)
    assert out["endpoint"].rstrip("/") == berth_url.rstrip("/")


def test_submit_attachment_state_changes_has_no_attachments(ecs, cluster):
    with pytest.raises(ClientError) as e:
        ecs.submit_attachment_state_changes(
            cluster=cluster, attachments=[{"attachmentArn": "arn:aws:ecs:us-east-1:000000000000:attachment/x", "status": "ATTACHED"}]
        )
    assert error_code(e) == "InvalidParameterException"


def test_submit_container_state_change_is_refused_for_agent_tasks(ecs, cluster):
    td = register(ecs, f"{cluster}-scsc")
    task = ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]["taskArn"]
    with pytest.raises(ClientError) as e:
        ecs.submit_container_state_change(cluster=cluster, task=task, containerName="main", status="STOPPED", exitCode=0)
    assert error_code(e) == "AccessDeniedException"
    ecs.stop_task(cluster=cluster, task=task)


# --------------------------------------------------------------------- services: tags


def test_list_tags_for_resource_on_a_service(ecs, cluster):
    td = register(ecs, f"{cluster}-svctags")
    arn = ecs.create_service(
        cluster=cluster, serviceName="tagged", taskDefinition=td, desiredCount=0, tags=[{"key": "team", "value": "a"}]
    )["service"]["serviceArn"]
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "a"}]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "env", "value": "dev"}])
    keys = {t["key"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert keys == {"team", "env"}
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn=arn.rsplit("/", 1)[0] + "/nope")
    assert error_code(e) == "ServiceNotFoundException"
    ecs.delete_service(cluster=cluster, service="tagged")


# --------------------------------------------------------------------- other protocols


def test_a_query_protocol_service_gets_an_xml_error(berth_url):
    import boto3

    elb = boto3.client(
        "elbv2", endpoint_url=berth_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with pytest.raises(ClientError) as e:
        elb.describe_load_balancers()
    assert error_code(e) == "InvalidAction"
    assert "not supported by berth" in e.value.response["Error"]["Message"]


def test_an_unserved_json_service_gets_a_json_error(berth_url):
    import boto3

    logs = boto3.client(
        "logs", endpoint_url=berth_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with pytest.raises(ClientError) as e:
        logs.describe_log_groups()
    assert error_code(e) == "UnknownOperationException"
    assert "not supported by berth" in e.value.response["Error"]["Message"]


# --------------------------------------------------------------------- validation order


@pytest.mark.parametrize(
    "operation, member, code, message",
    [
        ("describe_tasks", "tasks", "InvalidParameterException", "Tasks cannot be empty."),
        ("describe_services", "services", "InvalidParameterException", "Services cannot be empty."),
        ("describe_container_instances", "containerInstances", "ClientException", "Container Instances cannot be empty."),
    ],
)
def test_describe_calls_check_the_cluster_before_the_list(ecs, unique_name, cluster, operation, member, code, message):
    call = getattr(ecs, operation)
    with pytest.raises(ClientError) as e:
        call(cluster=unique_name("missing"), **{member: []})
    assert error_code(e) == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        call(cluster=cluster, **{member: []})
    assert (error_code(e), e.value.response["Error"]["Message"]) == (code, message)


# --------------------------------------------------------------------- compatibilities


def fargate_definition(family: str, **extra) -> dict:
    return {
        "family": family,
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [{"name": "main", "image": BUSYBOX, "essential": True}],
        **extra,
    }


def test_register_task_definition_fargate_checks_then_says_berth_has_no_fargate(ecs, unique_name):
    family = unique_name()
    cases = [
        ({}, "ClientException", "Fargate only supports network mode \u2018awsvpc\u2019."),
        ({"networkMode": "bridge"}, "ClientException", "Fargate only supports network mode \u2018awsvpc\u2019."),
        ({"networkMode": "awsvpc"}, "ClientException", "Fargate requires that 'cpu' be defined at the task level."),
        (
            {"networkMode": "awsvpc", "cpu": "256"},
            "ClientException",
            "Fargate requires that 'memory' be defined at the task level.",
        ),
        (
            {"networkMode": "awsvpc", "cpu": "256", "memory": "512", "ipcMode": "host"},
            "ClientException",
            "Tasks using the Fargate launch type do not support ipcMode.",
        ),
    ]
    for extra, code, message in cases:
        with pytest.raises(ClientError) as e:
            ecs.register_task_definition(**fargate_definition(family, **extra))
        assert (error_code(e), e.value.response["Error"]["Message"]) == (code, message), extra
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(**fargate_definition(family, networkMode="awsvpc", cpu="256", memory="512"))
    assert error_code(e) == "UnsupportedFeatureException"
    assert "no Fargate capacity" in e.value.response["Error"]["Message"]
    # Nothing was registered by the refusals.
    assert ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"] == []


def test_register_task_definition_compatibilities(ecs, unique_name):
    family = unique_name()
    plain = ecs.register_task_definition(
        family=family, containerDefinitions=[{"name": "main", "image": BUSYBOX, "memory": 32}]
    )["taskDefinition"]
    assert plain["compatibilities"] == ["EC2"]
    assert plain["networkMode"] == "bridge"
    external = ecs.register_task_definition(
        family=family,
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "main", "image": BUSYBOX, "memory": 32}],
    )["taskDefinition"]
    assert external["requiresCompatibilities"] == ["EXTERNAL"]
    assert external["compatibilities"] == ["EC2", "EXTERNAL"]


# --------------------------------------------------------------------- service revisions


def test_describe_service_revisions(ecs, cluster, unique_name):
    first = register(ecs, unique_name("td"))
    svc = ecs.create_service(cluster=cluster, serviceName="rev", taskDefinition=first, desiredCount=0)["service"]
    second = register(ecs, first.split("/")[-1].split(":")[0], command="sleep 1000")
    ecs.update_service(cluster=cluster, service="rev", taskDefinition=second)
    briefs = ecs.list_service_deployments(cluster=cluster, service="rev")["serviceDeployments"]
    revisions = [b["targetServiceRevisionArn"] for b in briefs]
    assert len(revisions) == 2
    missing = revisions[0].rsplit("/", 1)[0] + "/999999999"
    got = ecs.describe_service_revisions(serviceRevisionArns=revisions + [missing])
    by_arn = {r["serviceRevisionArn"]: r for r in got["serviceRevisions"]}
    assert set(by_arn) == set(revisions)
    assert {r["taskDefinition"] for r in by_arn.values()} == {first, second}
    for r in by_arn.values():
        assert r["serviceArn"] == svc["serviceArn"]
        assert r["clusterArn"] == svc["clusterArn"]
        assert r["launchType"] == "EC2"
        assert r["containerImages"] == [{"containerName": "main", "image": BUSYBOX}]
    assert [(f["arn"], f["reason"]) for f in got["failures"]] == [(missing, "MISSING")]
    with pytest.raises(ClientError) as e:
        ecs.describe_service_revisions(serviceRevisionArns=[svc["serviceArn"]])
    assert error_code(e) == "InvalidParameterException"
    ecs.delete_service(cluster=cluster, service="rev", force=True)


# --------------------------------------------------------------------- RegisterContainerInstance


def test_register_container_instance_resources_and_identity_attributes(ecs, unique_name):
    import json

    name = unique_name("api")
    ecs.create_cluster(clusterName=name)
    document = json.dumps(
        {"instanceId": "i-0123456789abcdef0", "imageId": "ami-0abc", "instanceType": "m5.large",
         "availabilityZone": "us-east-1c"}
    )
    # Through the API there is no agent to measure the instance: resources are required.
    with pytest.raises(ClientError) as e:
        ecs.register_container_instance(cluster=name, instanceIdentityDocument=document)
    assert error_code(e) == "InvalidParameterException"
    assert "totalResources is required" in e.value.response["Error"]["Message"]
    # (The dev agent may join the new cluster meanwhile; only the refused instance matters.)
    arns = ecs.list_container_instances(cluster=name)["containerInstanceArns"]
    if arns:
        listed = ecs.describe_container_instances(cluster=name, containerInstances=arns)
        assert "i-0123456789abcdef0" not in {i["ec2InstanceId"] for i in listed["containerInstances"]}
    resources = [
        {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096},
    ]
    inst = ecs.register_container_instance(
        cluster=name, instanceIdentityDocument=document, totalResources=resources
    )["containerInstance"]
    attrs = {a["name"]: a.get("value") for a in inst["attributes"]}
    assert attrs["ecs.ami-id"] == "ami-0abc"
    assert attrs["ecs.instance-type"] == "m5.large"
    assert attrs["ecs.availability-zone"] == "us-east-1c"
    assert attrs["ecs.os-type"] == "linux"
    assert inst["agentConnected"] is False
    # Re-registering the same instance without resources keeps what it had.
    again = ecs.register_container_instance(
        cluster=name, instanceIdentityDocument=document, containerInstanceArn=inst["containerInstanceArn"]
    )["containerInstance"]
    assert again["containerInstanceArn"] == inst["containerInstanceArn"]
    registered = {r["name"]: r.get("integerValue") for r in again["registeredResources"]}
    assert (registered["CPU"], registered["MEMORY"]) == (2048, 4096)
    ecs.deregister_container_instance(cluster=name, containerInstance=inst["containerInstanceArn"], force=True)
    ecs.delete_cluster(cluster=name)

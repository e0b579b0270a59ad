"""Identity and access through the real clients (boto3, AWS CLI) against `berth server`
with auth on: SigV4 failures in each protocol, IAM and STS round trips whose XML is checked
member by member against botocore's models, and policy evaluation on ECS requests
(resource scoping, iam:PassRole, explicit deny, NotAction/NotResource, condition keys).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from conftest import BerthDev, aws_client

ACCOUNT = "000000000000"
REGION = "us-east-1"
ECS_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}"


# ---------------------------------------------------------------------------
# Strict XML: every element berth sends must be a member of botocore's output shape
# (botocore's parser silently ignores unknown elements, so a misspelt member would only
# show up as a missing value).
# ---------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _walk(elem, shape, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        for child in elem:
            name = _local(child.tag)
            members = {m.serialization.get("name", n): m for n, m in shape.members.items()}
            if name not in members:
                problems.append(f"{path}/{name}: not a member of {shape.name}")
                continue
            _walk(child, members[name], f"{path}/{name}", problems)
    elif kind == "list":
        item = shape.member.serialization.get("name", "member")
        for child in elem:
            if _local(child.tag) != item:
                problems.append(f"{path}/{_local(child.tag)}: list items are <{item}>")
                continue
            _walk(child, shape.member, f"{path}/{item}", problems)
    elif kind == "map":
        problems.append(f"{path}: maps are not expected here")
    else:
        if len(elem):
            problems.append(f"{path}: {kind} has child elements")


class XmlCheck:
    def __init__(self):
        self.problems: list[str] = []
        self.checked = 0

    def ok(self) -> bool:
        """Some responses were checked and every element was a modelled member."""
        return self.checked > 0 and not self.problems


def strict_xml(client) -> XmlCheck:
    """Registers a check of every response of `client` against its model."""
    result = XmlCheck()
    problems = result.problems

    def check(operation_model=None, response_dict=None, **_):
        if response_dict is None or response_dict.get("status_code", 500) >= 300:
            return
        result.checked += 1
        root = ET.fromstring(response_dict["body"])
        op = operation_model.name
        if _local(root.tag) != f"{op}Response":
            problems.append(f"{op}: root element {_local(root.tag)}")
            return
        shape = operation_model.output_shape
        for child in root:
            name = _local(child.tag)
            if name == "ResponseMetadata":
                continue
            if shape is None or name != shape.serialization.get("resultWrapper"):
                problems.append(f"{op}: unexpected <{name}>")
                continue
            _walk(child, shape, f"{op}/{name}", problems)

    client.meta.events.register("before-parse.*.*", check)
    return result


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(auth_server):
    return auth_server.credentials()


@pytest.fixture(scope="module")
def client(auth_server, admin):
    def make(service: str, key: str | None = None, secret: str | None = None, token=None):
        k, s = (key, secret) if key else admin
        return aws_client(service, auth_server.url, k, s, token)

    return make


@pytest.fixture
def name():
    counter = iter(range(1000))
    base = uuid.uuid4().hex[:6]
    return lambda kind="": f"t{base}{kind}{next(counter)}"


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def message(e: ClientError) -> str:
    return e.response["Error"]["Message"]


def make_user(client, user: str, policy: dict | None = None):
    """A user with an inline policy and an access key; returns its clients' factory."""
    iam = client("iam")
    iam.create_user(UserName=user)
    if policy is not None:
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return lambda service: client(service, key["AccessKeyId"], key["SecretAccessKey"])


def allow(action, resource="*", condition=None, effect="Allow", **extra) -> dict:
    statement = {"Effect": effect, "Action": action, "Resource": resource, **extra}
    if condition:
        statement["Condition"] = condition
    return statement


def policy(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def not_denied(call) -> None:
    """Runs an ECS call that authorization must let through. What happens next is ECS's
    business: on a cluster without container instances RunTask fails with
    InvalidParameterException, as in ECS."""
    try:
        call()
    except ClientError as e:
        assert code(e) != "AccessDeniedException", message(e)
        assert code(e) == "InvalidParameterException" and "No Container Instances" in message(e), message(e)


def register_busybox(ecs, family: str, **extra) -> str:
    return ecs.register_task_definition(
        family=family,
        containerDefinitions=[
            {"name": "main", "image": "berth-test/busybox:latest", "memory": 32, "essential": True}
        ],
        **extra,
    )["taskDefinition"]["taskDefinitionArn"]


# ---------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------


def test_admin_key_signs_every_protocol(client):
    sts, iam, ecs = client("sts"), client("iam"), client("ecs")
    problems = strict_xml(sts)
    me = sts.get_caller_identity()
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert me["Account"] == ACCOUNT and me["UserId"] == ACCOUNT
    assert "clusterArns" in ecs.list_clusters()
    assert "Users" in iam.list_users()
    assert problems.ok(), (problems.checked, problems.problems)


def test_wrong_secret_and_unknown_key(client, admin):
    key, _ = admin
    for service, call, expected in [
        ("ecs", lambda c: c.list_clusters(), "InvalidSignatureException"),
        ("iam", lambda c: c.list_users(), "SignatureDoesNotMatch"),
        ("sts", lambda c: c.get_caller_identity(), "SignatureDoesNotMatch"),
        ("secretsmanager", lambda c: c.list_secrets(), "InvalidSignatureException"),
        ("ssm", lambda c: c.get_parameter(Name="/x"), "InvalidSignatureException"),
    ]:
        with pytest.raises(ClientError) as e:
            call(client(service, key, "not-the-secret"))
        assert code(e.value) == expected, service
        assert message(e.value).startswith("The request signature we calculated does not match")
    for service, call, expected in [
        ("ecs", lambda c: c.list_clusters(), "UnrecognizedClientException"),
        ("iam", lambda c: c.list_users(), "InvalidClientTokenId"),
        ("sts", lambda c: c.get_caller_identity(), "InvalidClientTokenId"),
    ]:
        with pytest.raises(ClientError) as e:
            call(client(service, "AKIAUNKNOWNKEY000000", "x"))
        assert code(e.value) == expected, service
        assert message(e.value) == "The security token included in the request is invalid."


def test_aws_cli_with_valid_and_invalid_keys(auth_server, admin):
    key, secret = admin
    env = dict(os.environ, AWS_DEFAULT_REGION=REGION, AWS_PAGER="", AWS_MAX_ATTEMPTS="1")
    env.pop("AWS_PROFILE", None)

    def aws(*args, secret_key=secret):
        return subprocess.run(
            ["aws", "--endpoint-url", auth_server.url, "--output", "json", *args],
            env=dict(env, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret_key),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    out = aws("sts", "get-caller-identity")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    out = aws("ecs", "list-clusters", secret_key="wrong")
    assert out.returncode != 0
    assert "(InvalidSignatureException)" in out.stderr
    out = aws("iam", "list-users", secret_key="wrong")
    assert "(SignatureDoesNotMatch)" in out.stderr


# ---------------------------------------------------------------------------
# IAM round trips (XML checked against botocore's model)
# ---------------------------------------------------------------------------


def test_users_keys_and_errors(client, name):
    iam = client("iam")
    problems = strict_xml(iam)
    user = name("u")
    created = iam.create_user(UserName=user, Path="/team/", Tags=[{"Key": "team", "Value": "a"}])
    u = created["User"]
    assert u["UserName"] == user and u["Path"] == "/team/"
    assert u["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/{user}"
    assert u["UserId"].startswith("AIDA") and u["Tags"] == [{"Key": "team", "Value": "a"}]
    assert iam.get_user(UserName=user)["User"]["UserId"] == u["UserId"]
    assert user in [x["UserName"] for x in iam.list_users(PathPrefix="/team/")["Users"]]
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName=user)
    assert code(e.value) == "EntityAlreadyExists"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409

    k1 = iam.create_access_key(UserName=user)["AccessKey"]
    assert k1["AccessKeyId"].startswith("AKIA") and len(k1["SecretAccessKey"]) == 40
    assert k1["Status"] == "Active" and k1["UserName"] == user
    k2 = iam.create_access_key(UserName=user)["AccessKey"]
    with pytest.raises(ClientError) as e:
        iam.create_access_key(UserName=user)
    assert code(e.value) == "LimitExceeded"
    listed = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    assert {k["AccessKeyId"] for k in listed} == {k1["AccessKeyId"], k2["AccessKeyId"]}
    assert all("SecretAccessKey" not in k for k in listed)

    # An inactive key stops working; a deleted one too.
    c = client("sts", k1["AccessKeyId"], k1["SecretAccessKey"])
    assert c.get_caller_identity()["Arn"] == u["Arn"]
    iam.update_access_key(UserName=user, AccessKeyId=k1["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError) as e:
        c.get_caller_identity()
    assert code(e.value) == "InvalidClientTokenId"

    with pytest.raises(ClientError) as e:
        iam.delete_user(UserName=user)
    assert code(e.value) == "DeleteConflict"
    for k in (k1, k2):
        iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
    iam.delete_user(UserName=user)
    with pytest.raises(ClientError) as e:
        iam.get_user(UserName=user)
    assert code(e.value) == "NoSuchEntity"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert problems.ok(), (problems.checked, problems.problems)


def test_roles_policies_and_attachments(client, name):
    iam = client("iam")
    problems = strict_xml(iam)
    user, role, pol = name("u"), name("r"), name("p")
    iam.create_user(UserName=user)
    trust = policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{user}"}, "Action": "sts:AssumeRole"}
    )
    r = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust), Description="d")["Role"]
    assert r["RoleId"].startswith("AROA") and r["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/{role}"
    got = iam.get_role(RoleName=role)["Role"]
    # botocore decodes the URL-encoded document IAM sends.
    assert got["AssumeRolePolicyDocument"] == trust
    assert got["MaxSessionDuration"] == 3600 and got["Description"] == "d"

    doc = policy(allow("ecs:Describe*"))
    p = iam.create_policy(PolicyName=pol, PolicyDocument=json.dumps(doc), Description="reads")["Policy"]
    assert p["Arn"] == f"arn:aws:iam::{ACCOUNT}:policy/{pol}" and p["DefaultVersionId"] == "v1"
    assert p["AttachmentCount"] == 0 and p["IsAttachable"] is True
    version = iam.get_policy_version(PolicyArn=p["Arn"], VersionId="v1")["PolicyVersion"]
    assert version["Document"] == doc and version["IsDefaultVersion"] is True

    iam.attach_user_policy(UserName=user, PolicyArn=p["Arn"])
    iam.attach_role_policy(RoleName=role, PolicyArn=p["Arn"])
    iam.attach_role_policy(RoleName=role, PolicyArn="arn:aws:iam::aws:policy/AmazonECS_FullAccess")
    assert iam.get_policy(PolicyArn=p["Arn"])["Policy"]["AttachmentCount"] == 2
    assert iam.list_attached_user_policies(UserName=user)["AttachedPolicies"] == [
        {"PolicyName": pol, "PolicyArn": p["Arn"]}
    ]
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert [a["PolicyName"] for a in attached] == [pol, "AmazonECS_FullAccess"]
    with pytest.raises(ClientError) as e:
        iam.delete_policy(PolicyArn=p["Arn"])
    assert code(e.value) == "DeleteConflict"

    inline = policy(allow("ecs:ListClusters"))
    iam.put_user_policy(UserName=user, PolicyName="inline", PolicyDocument=json.dumps(inline))
    iam.put_role_policy(RoleName=role, PolicyName="inline", PolicyDocument=json.dumps(inline))
    got = iam.get_user_policy(UserName=user, PolicyName="inline")
    assert got["PolicyDocument"] == inline and got["UserName"] == user
    assert iam.get_role_policy(RoleName=role, PolicyName="inline")["PolicyDocument"] == inline
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == ["inline"]
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["inline"]
    with pytest.raises(ClientError) as e:
        iam.delete_role(RoleName=role)
    assert code(e.value) == "DeleteConflict"
    with pytest.raises(ClientError) as e:
        iam.put_user_policy(UserName=user, PolicyName="bad", PolicyDocument='{"Statement": []}')
    assert code(e.value) == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as e:
        iam.create_role(RoleName=name("r"), AssumeRolePolicyDocument=json.dumps(policy(allow("s3:*"))))
    assert code(e.value) == "MalformedPolicyDocument"
    with pytest.raises(ClientError) as e:
        iam.get_user_policy(UserName=user, PolicyName="nope")
    assert code(e.value) == "NoSuchEntity"

    iam.delete_user_policy(UserName=user, PolicyName="inline")
    iam.delete_role_policy(RoleName=role, PolicyName="inline")
    iam.detach_user_policy(UserName=user, PolicyArn=p["Arn"])
    with pytest.raises(ClientError) as e:
        iam.detach_user_policy(UserName=user, PolicyArn=p["Arn"])
    assert code(e.value) == "NoSuchEntity"
    iam.detach_role_policy(RoleName=role, PolicyArn=p["Arn"])
    iam.detach_role_policy(RoleName=role, PolicyArn="arn:aws:iam::aws:policy/AmazonECS_FullAccess")
    iam.delete_policy(PolicyArn=p["Arn"])
    iam.delete_role(RoleName=role)
    iam.delete_user(UserName=user)
    assert problems.ok(), (problems.checked, problems.problems)


# ---------------------------------------------------------------------------
# STS
# ---------------------------------------------------------------------------


def test_assume_role(client, name):
    iam = client("iam")
    user, role, other = name("u"), name("r"), name("o")
    as_user = make_user(client, user, policy(allow("sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/{other}")))
    trust = policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{user}"}, "Action": "sts:AssumeRole"}
    )
    r = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName=role, PolicyName="p", PolicyDocument=json.dumps(policy(allow("ecs:ListClusters"))))
    sts = as_user("sts")
    problems = strict_xml(sts)
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/{user}"
    out = sts.assume_role(RoleArn=r["Arn"], RoleSessionName="ci", DurationSeconds=900)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/ci"
    assert out["AssumedRoleUser"]["AssumedRoleId"] == f"{r['RoleId']}:ci"
    remaining = creds["Expiration"].timestamp() - time.time()
    assert 800 < remaining <= 905, remaining
    assert problems.ok(), (problems.checked, problems.problems)

    session = lambda service: client(  # noqa: E731
        service, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    )
    me = session("sts").get_caller_identity()
    assert me["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/ci"
    assert me["UserId"] == f"{r['RoleId']}:ci"
    session("ecs").list_clusters()
    with pytest.raises(ClientError) as e:
        session("ecs").create_cluster(clusterName=name("c"))
    assert code(e.value) == "AccessDeniedException"
    assert message(e.value).startswith(f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{role}/ci is not authorized")
    # Without the token the key is unknown.
    with pytest.raises(ClientError) as e:
        client("ecs", creds["AccessKeyId"], creds["SecretAccessKey"]).list_clusters()
    assert code(e.value) == "UnrecognizedClientException"

    # A role that trusts the account needs the caller's own permission; one that does not
    # trust the caller at all is refused; the root may not assume roles.
    account_trust = policy({"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"})
    iam.create_role(RoleName=other, AssumeRolePolicyDocument=json.dumps(account_trust))
    sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{other}", RoleSessionName="s2")
    stranger = make_user(client, name("s"))
    with pytest.raises(ClientError) as e:
        stranger("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{other}", RoleSessionName="s3")
    assert code(e.value) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        client("sts").assume_role(RoleArn=r["Arn"], RoleSessionName="root")
    assert code(e.value) == "AccessDenied"
    assert message(e.value) == "Roles may not be assumed by root accounts."
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=r["Arn"], RoleSessionName="long", DurationSeconds=7200)
    assert code(e.value) == "ValidationError"


@pytest.fixture(scope="module")
def short_sessions(tmp_path_factory):
    """A `berth server` whose STS sessions last 2 s (a hidden test-only flag): AWS's minimum
    DurationSeconds is 900, too long to wait for."""
    server = BerthDev(
        tmp_path_factory.mktemp("berth-short"),
        "pyshort",
        command="server",
        extra_args=["--test-max-session-secs", "2"],
    )
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def test_expired_temporary_credentials(short_sessions):
    key, secret = short_sessions.credentials()
    admin = lambda service: aws_client(service, short_sessions.url, key, secret)  # noqa: E731
    iam = admin("iam")
    iam.create_user(UserName="u")
    k = iam.create_access_key(UserName="u")["AccessKey"]
    trust = policy({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/u"}, "Action": "sts:AssumeRole"})
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName="r", PolicyName="p", PolicyDocument=json.dumps(policy(allow("ecs:*"))))
    user_sts = aws_client("sts", short_sessions.url, k["AccessKeyId"], k["SecretAccessKey"])
    creds = user_sts.assume_role(RoleArn=role["Arn"], RoleSessionName="brief")["Credentials"]
    session = lambda service: aws_client(  # noqa: E731
        service, short_sessions.url, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    )
    session("ecs").list_clusters()
    time.sleep(2.5)
    with pytest.raises(ClientError) as e:
        session("ecs").list_clusters()
    assert code(e.value) == "ExpiredTokenException"
    assert message(e.value) == "The security token included in the request is expired"
    with pytest.raises(ClientError) as e:
        session("sts").get_caller_identity()
    assert code(e.value) == "ExpiredToken"


# ---------------------------------------------------------------------------
# Policy evaluation on ECS requests
# ---------------------------------------------------------------------------


def test_run_task_allowed_on_cluster_a_only(client, name):
    ecs = client("ecs")
    a, b, family = name("a"), name("b"), name("f")
    ecs.create_cluster(clusterName=a)
    ecs.create_cluster(clusterName=b)
    td = register_busybox(ecs, family)
    user = name("u")
    as_user = make_user(
        client,
        user,
        policy(allow("ecs:RunTask", condition={"ArnEquals": {"ecs:cluster": f"{ECS_ARN}:cluster/{a}"}})),
    )
    user_ecs = as_user("ecs")
    # Allowed on A.
    not_denied(lambda: user_ecs.run_task(cluster=a, taskDefinition=family))
    with pytest.raises(ClientError) as e:
        user_ecs.run_task(cluster=b, taskDefinition=family)
    assert code(e.value) == "AccessDeniedException"
    assert message(e.value) == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{user} is not authorized to perform: ecs:RunTask "
        f"on resource: {td} because no identity-based policy allows the ecs:RunTask action"
    )
    # Nothing else is allowed.
    with pytest.raises(ClientError) as e:
        user_ecs.describe_clusters(clusters=[a])
    assert code(e.value) == "AccessDeniedException"
    assert f"on resource: {ECS_ARN}:cluster/{a} " in message(e.value)


def test_pass_role_is_needed_for_task_roles(client, name):
    ecs, iam = client("ecs"), client("iam")
    cluster, family, role, other = name("c"), name("f"), name("r"), name("o")
    trust = policy({"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"})
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    other_arn = iam.create_role(RoleName=other, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    ecs.create_cluster(clusterName=cluster)
    register_busybox(ecs, family, executionRoleArn=role_arn)
    user = name("u")
    c = make_user(client, user, policy(allow("ecs:RunTask")))("ecs")
    with pytest.raises(ClientError) as e:
        c.run_task(cluster=cluster, taskDefinition=family)
    assert code(e.value) == "AccessDeniedException"
    assert message(e.value) == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{user} is not authorized to perform: iam:PassRole "
        f"on resource: {role_arn} because no identity-based policy allows the iam:PassRole action"
    )
    iam.put_user_policy(
        UserName=user,
        PolicyName="pass",
        PolicyDocument=json.dumps(
            policy(allow("iam:PassRole", role_arn, {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}))
        ),
    )
    not_denied(lambda: c.run_task(cluster=cluster, taskDefinition=family))
    # A task role given in overrides needs PassRole too.
    with pytest.raises(ClientError) as e:
        c.run_task(cluster=cluster, taskDefinition=family, overrides={"taskRoleArn": other_arn})
    assert code(e.value) == "AccessDeniedException"
    assert f"iam:PassRole on resource: {other_arn}" in message(e.value)


def test_explicit_deny_wins(client, name):
    ecs, iam = client("ecs"), client("iam")
    keep = name("c")
    ecs.create_cluster(clusterName=keep)
    user = name("u")
    as_user = make_user(client, user, policy(allow("ecs:DeleteCluster", effect="Deny")))
    iam.attach_user_policy(UserName=user, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    user_ecs = as_user("ecs")
    assert user_ecs.describe_clusters(clusters=[keep])["clusters"][0]["clusterName"] == keep
    with pytest.raises(ClientError) as e:
        user_ecs.delete_cluster(cluster=keep)
    assert code(e.value) == "AccessDeniedException"
    assert message(e.value) == (
        f"User: arn:aws:iam::{ACCOUNT}:user/{user} is not authorized to perform: ecs:DeleteCluster "
        f"on resource: {ECS_ARN}:cluster/{keep} with an explicit deny in an identity-based policy"
    )


def test_not_action_and_not_resource(client, name):
    ecs = client("ecs")
    dev, prod = name("dev"), name("prod")
    ecs.create_cluster(clusterName=dev)
    ecs.create_cluster(clusterName=prod)
    as_user = make_user(
        client,
        name("u"),
        policy({"Effect": "Allow", "NotAction": "ecs:Delete*", "NotResource": f"{ECS_ARN}:cluster/{prod}"}),
    )
    user_ecs = as_user("ecs")
    assert user_ecs.describe_clusters(clusters=[dev])["clusters"]
    user_ecs.list_clusters()  # no resource-level permissions: not the excluded resource
    with pytest.raises(ClientError) as e:
        user_ecs.describe_clusters(clusters=[prod])
    assert code(e.value) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        user_ecs.delete_cluster(cluster=dev)
    assert code(e.value) == "AccessDeniedException"


def test_tag_condition_keys(client, name):
    ecs = client("ecs")
    mine, theirs = name("mine"), name("theirs")
    ecs.create_cluster(clusterName=mine, tags=[{"key": "team", "value": "a"}])
    ecs.create_cluster(clusterName=theirs, tags=[{"key": "team", "value": "b"}])
    as_user = make_user(
        client,
        name("u"),
        policy(
            allow("ecs:DescribeClusters", condition={"StringEquals": {"aws:ResourceTag/team": "a"}}),
            allow(
                ["ecs:CreateCluster", "ecs:TagResource"],
                condition={
                    "StringEquals": {"aws:RequestTag/team": "a"},
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]},
                },
            ),
        ),
    )
    user_ecs = as_user("ecs")
    assert user_ecs.describe_clusters(clusters=[mine])["clusters"][0]["clusterName"] == mine
    with pytest.raises(ClientError) as e:
        user_ecs.describe_clusters(clusters=[theirs])
    assert code(e.value) == "AccessDeniedException"
    user_ecs.create_cluster(clusterName=name("new"), tags=[{"key": "team", "value": "a"}])
    for tags in ([{"key": "team", "value": "b"}], [{"key": "team", "value": "a"}, {"key": "cost", "value": "1"}], []):
        with pytest.raises(ClientError) as e:
            user_ecs.create_cluster(clusterName=name("new"), tags=tags)
        assert code(e.value) == "AccessDeniedException", tags


def test_every_decision_is_audited(auth_server, client, name):
    user = name("u")
    as_user = make_user(client, user, policy(allow("ecs:ListClusters")))
    as_user("ecs").list_clusters()
    with pytest.raises(ClientError):
        as_user("ecs").create_cluster(clusterName=name("c"))
    deadline = time.monotonic() + 5
    while True:
        log = auth_server.log_path.read_text(errors="replace")
        lines = [line for line in log.splitlines() if "berth::audit" in line and f"user/{user}" in line]
        allowed = [line for line in lines if 'action="ecs:ListClusters"' in line and 'decision="allow"' in line]
        denied = [line for line in lines if 'action="ecs:CreateCluster"' in line and 'decision="deny"' in line]
        if allowed and denied:
            break
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)

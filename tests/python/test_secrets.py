"""Secrets Manager and SSM Parameter Store through boto3 against `berth server` (auth on):
round trips, version stages, deletion, paths, authorization with IAM policies, and
encryption at rest (the store file holds no value in the clear).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import aws_client

ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def admin(auth_server):
    key, secret = auth_server.credentials()
    return lambda service: aws_client(service, auth_server.url, key, secret)


@pytest.fixture
def name():
    base = uuid.uuid4().hex[:8]
    counter = iter(range(1000))
    return lambda kind="": f"{kind}{base}-{next(counter)}"


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def test_secret_versions_and_stages(admin, name):
    sm = admin("secretsmanager")
    secret = name("db/")
    created = sm.create_secret(Name=secret, SecretString="v1", Description="db", Tags=[{"Key": "team", "Value": "a"}])
    arn = created["ARN"]
    assert arn.startswith(f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{secret}-") and len(arn) == len(
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{secret}-"
    ) + 6
    v1 = created["VersionId"]
    got = sm.get_secret_value(SecretId=secret)
    assert (got["SecretString"], got["VersionId"], got["VersionStages"]) == ("v1", v1, ["AWSCURRENT"])
    assert got["ARN"] == arn and got["Name"] == secret

    put = sm.put_secret_value(SecretId=arn, SecretString="v2")
    v2 = put["VersionId"]
    assert put["VersionStages"] == ["AWSCURRENT"]
    assert sm.get_secret_value(SecretId=secret)["SecretString"] == "v2"
    prev = sm.get_secret_value(SecretId=secret, VersionStage="AWSPREVIOUS")
    assert (prev["SecretString"], prev["VersionId"]) == ("v1", v1)
    assert sm.get_secret_value(SecretId=secret, VersionId=v1)["SecretString"] == "v1"
    # A partial ARN (without the random suffix) names it too.
    assert sm.get_secret_value(SecretId=arn[:-7])["SecretString"] == "v2"

    updated = sm.update_secret(SecretId=secret, SecretString="v3", Description="database")
    v3 = updated["VersionId"]
    described = sm.describe_secret(SecretId=secret)
    assert described["Description"] == "database"
    assert described["VersionIdsToStages"] == {v2: ["AWSPREVIOUS"], v3: ["AWSCURRENT"]}
    assert described["Tags"] == [{"Key": "team", "Value": "a"}]
    assert described["CreatedDate"] and described["LastChangedDate"]

    binary = name("bin-")
    sm.create_secret(Name=binary, SecretBinary=b"\x00\x01\xffbytes")
    assert sm.get_secret_value(SecretId=binary)["SecretBinary"] == b"\x00\x01\xffbytes"

    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [secret]}])["SecretList"]
    assert [s["Name"] for s in listed] == [secret]
    assert listed[0]["SecretVersionsToStages"][v3] == ["AWSCURRENT"]

    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=secret, SecretString="again")
    assert code(e.value) == "ResourceExistsException"
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=name("missing-"))
    assert code(e.value) == "ResourceNotFoundException"
    assert e.value.response["Error"]["Message"] == "Secrets Manager can't find the specified secret."


def test_secret_deletion_and_recovery(admin, name):
    sm = admin("secretsmanager")
    secret = name("gone-")
    sm.create_secret(Name=secret, SecretString="x")
    deleted = sm.delete_secret(SecretId=secret, RecoveryWindowInDays=7)
    assert 6.9 * 86400 < deleted["DeletionDate"].timestamp() - time.time() < 7.1 * 86400
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=secret)
    assert code(e.value) == "InvalidRequestException"
    assert secret not in [s["Name"] for s in sm.list_secrets()["SecretList"]]
    assert secret in [s["Name"] for s in sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]]
    sm.restore_secret(SecretId=secret)
    assert sm.get_secret_value(SecretId=secret)["SecretString"] == "x"
    sm.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    with pytest.raises(ClientError) as e:
        sm.describe_secret(SecretId=secret)
    assert code(e.value) == "ResourceNotFoundException"


def test_parameters(admin, name):
    ssm = admin("ssm")
    root = "/" + name("app")
    assert ssm.put_parameter(Name=f"{root}/url", Value="http://x", Type="String")["Version"] == 1
    ssm.put_parameter(Name=f"{root}/db/password", Value="s3cret", Type="SecureString")
    ssm.put_parameter(Name=f"{root}/hosts", Value="a,b", Type="StringList")
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name=f"{root}/url", Value="other", Type="String")
    assert code(e.value) == "ParameterAlreadyExists"
    assert ssm.put_parameter(Name=f"{root}/url", Value="http://y", Type="String", Overwrite=True)["Version"] == 2

    p = ssm.get_parameter(Name=f"{root}/url")["Parameter"]
    assert (p["Value"], p["Version"], p["Type"]) == ("http://y", 2, "String")
    assert p["ARN"] == f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{root}/url"
    assert ssm.get_parameter(Name=f"{root}/url:1")["Parameter"]["Value"] == "http://x"
    hidden = ssm.get_parameter(Name=f"{root}/db/password")["Parameter"]
    assert hidden["Type"] == "SecureString" and hidden["Value"] != "s3cret"
    shown = ssm.get_parameter(Name=f"{root}/db/password", WithDecryption=True)["Parameter"]
    assert shown["Value"] == "s3cret"

    got = ssm.get_parameters(Names=[f"{root}/url", f"{root}/nope"], WithDecryption=True)
    assert [x["Name"] for x in got["Parameters"]] == [f"{root}/url"]
    assert got["InvalidParameters"] == [f"{root}/nope"]

    direct = ssm.get_parameters_by_path(Path=root)["Parameters"]
    assert sorted(x["Name"] for x in direct) == [f"{root}/hosts", f"{root}/url"]
    everything, token = [], None
    while True:
        kwargs = {"NextToken": token} if token else {}
        page = ssm.get_parameters_by_path(Path=root, Recursive=True, WithDecryption=True, MaxResults=2, **kwargs)
        everything += page["Parameters"]
        token = page.get("NextToken")
        if not token:
            break
    assert {x["Name"]: x["Value"] for x in everything} == {
        f"{root}/url": "http://y",
        f"{root}/db/password": "s3cret",
        f"{root}/hosts": "a,b",
    }

    ssm.delete_parameter(Name=f"{root}/url")
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=f"{root}/url")
    assert code(e.value) == "ParameterNotFound"
    with pytest.raises(ClientError) as e:
        ssm.delete_parameter(Name=f"{root}/url")
    assert code(e.value) == "ParameterNotFound"
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name="/aws/reserved", Value="x", Type="String")
    assert code(e.value) == "ValidationException"


def test_secrets_are_authorized_by_policy(admin, auth_server, name):
    sm, ssm, iam = admin("secretsmanager"), admin("ssm"), admin("iam")
    prefix = name("team")
    mine, other = f"{prefix}/db", name("other-")
    sm.create_secret(Name=mine, SecretString="ok")
    sm.create_secret(Name=other, SecretString="no")
    ssm.put_parameter(Name=f"/{prefix}/p", Value="ok", Type="String")
    ssm.put_parameter(Name=f"/{name('x')}/p", Value="no", Type="String")
    user = name("u")
    iam.create_user(UserName=user)
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": f"arn:aws:secretsmanager:*:*:secret:{prefix}/*",
            },
            # GetParametersByPath acts on the path itself; the others on each parameter.
            {
                "Effect": "Allow",
                "Action": "ssm:GetParameter*",
                "Resource": [f"arn:aws:ssm:*:*:parameter/{prefix}", f"arn:aws:ssm:*:*:parameter/{prefix}/*"],
            },
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(doc))
    k = iam.create_access_key(UserName=user)["AccessKey"]
    user_sm = aws_client("secretsmanager", auth_server.url, k["AccessKeyId"], k["SecretAccessKey"])
    user_ssm = aws_client("ssm", auth_server.url, k["AccessKeyId"], k["SecretAccessKey"])
    assert user_sm.get_secret_value(SecretId=mine)["SecretString"] == "ok"
    with pytest.raises(ClientError) as e:
        user_sm.get_secret_value(SecretId=other)
    assert code(e.value) == "AccessDeniedException"
    assert "secretsmanager:GetSecretValue" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        user_sm.put_secret_value(SecretId=mine, SecretString="x")
    assert code(e.value) == "AccessDeniedException"
    assert user_ssm.get_parameter(Name=f"/{prefix}/p")["Parameter"]["Value"] == "ok"
    assert [p["Name"] for p in user_ssm.get_parameters_by_path(Path=f"/{prefix}")["Parameters"]] == [f"/{prefix}/p"]
    with pytest.raises(ClientError) as e:
        user_ssm.put_parameter(Name=f"/{prefix}/q", Value="x", Type="String")
    assert code(e.value) == "AccessDeniedException"


def test_values_are_encrypted_at_rest(admin, auth_server, name):
    sm, ssm, iam = admin("secretsmanager"), admin("ssm"), admin("iam")
    secret_value = f"SECRET-{uuid.uuid4().hex}"
    param_value = f"PARAM-{uuid.uuid4().hex}"
    plain_value = f"PLAIN-{uuid.uuid4().hex}"
    marker = name("marker-")
    sm.create_secret(Name=marker, SecretString=secret_value)
    ssm.put_parameter(Name=f"/{marker}/secure", Value=param_value, Type="SecureString")
    ssm.put_parameter(Name=f"/{marker}/plain", Value=plain_value, Type="String")
    iam.create_user(UserName=marker)
    key = iam.create_access_key(UserName=marker)["AccessKey"]
    data = (auth_server.data_dir / "state.redb").read_bytes()
    assert marker.encode() in data  # the names are there: we are reading the right file
    for value in (secret_value, param_value, plain_value, key["SecretAccessKey"], auth_server.credentials()[1]):
        assert value.encode() not in data, value

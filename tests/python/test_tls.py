"""TLS with real clients: `berth server --tls-self-signed` makes a CA once in its data
directory; boto3 with `verify=<ca.pem>`, the AWS CLI with `--ca-bundle` and `berth join-token`
with `--ca-cert` talk to it, and a client that does not trust the CA is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import BerthDev, berth_bin


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    server = BerthDev(
        tmp_path_factory.mktemp("berth-tls"),
        f"tls{uuid.uuid4().hex[:8]}",
        ["--tls-self-signed"],
        command="server",
    )
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def ecs_client(server: BerthDev, verify):
    key, secret = server.credentials()
    return boto3.client(
        "ecs",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=verify,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def test_boto3_trusts_the_servers_ca_file(tls_server):
    assert tls_server.url.startswith("https://")
    ca = tls_server.data_dir / "tls" / "ca.pem"
    assert oct(ca.stat().st_mode & 0o777) == "0o644"
    assert oct((tls_server.data_dir / "tls" / "server.key").stat().st_mode & 0o777) == "0o600"
    ecs = ecs_client(tls_server, str(ca))
    ecs.create_cluster(clusterName="tls-boto3")
    assert any(a.endswith("/tls-boto3") for a in ecs.list_clusters()["clusterArns"])


def test_a_client_without_the_ca_is_refused(tls_server):
    ecs = ecs_client(tls_server, True)
    with pytest.raises(botocore.exceptions.SSLError):
        ecs.list_clusters()


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
def test_aws_cli_with_ca_bundle(tls_server):
    key, secret = tls_server.credentials()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_CA_BUNDLE", None)
    ca = str(tls_server.data_dir / "tls" / "ca.pem")
    out = subprocess.run(
        ["aws", "--endpoint-url", tls_server.url, "--ca-bundle", ca,
         "ecs", "list-clusters", "--output", "json"],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert "clusterArns" in out.stdout


def test_join_token_cli_over_tls(tls_server):
    ecs = ecs_client(tls_server, str(tls_server.data_dir / "tls" / "ca.pem"))
    ecs.create_cluster(clusterName="tls-tokens")
    common = ["--endpoint", tls_server.url,
              "--ca-cert", str(tls_server.data_dir / "tls" / "ca.pem"),
              "--credentials-file", str(tls_server.data_dir / "credentials")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    created = subprocess.run(
        [str(berth_bin()), "join-token", "create", "--cluster", "tls-tokens", *common],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("bjt_") and "." in token
    listed = subprocess.run(
        [str(berth_bin()), "join-token", "list", *common],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert listed.returncode == 0, listed.stderr
    token_id = token.removeprefix("bjt_").split(".")[0]
    assert token_id in listed.stdout and "ACTIVE" in listed.stdout
    assert token.split(".")[1] not in listed.stdout


def test_berth_dev_tls_agent_joins_by_itself(tmp_path):
    """`berth dev --tls`: its own agent trusts the dev CA and joins with a token berth made."""
    import time

    server = BerthDev(tmp_path, f"devtls{uuid.uuid4().hex[:8]}", ["--tls"])
    try:
        url = server.wait_listening()
        assert url.startswith("https://")
        ecs = ecs_client(server, str(server.data_dir / "server" / "tls" / "ca.pem"))
        deadline = time.monotonic() + 30
        while not ecs.list_container_instances(cluster="default")["containerInstanceArns"]:
            assert time.monotonic() < deadline, "the dev agent did not join over TLS"
            time.sleep(0.1)
    finally:
        server.stop()
        server.remove_containers()

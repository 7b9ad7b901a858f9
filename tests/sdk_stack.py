"""What the SageMaker SDK suites share: moto's S3 server beside a real ``spotrun server``,
and an SDK session pointed at both, signed with spotrun's access key.

Nothing in the SDK is patched: it finds spotrun and moto only through the endpoint
variables, as a user points it at any SageMaker-compatible endpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from sagemaker_server import Server
from spotrun.cli.client import stop_service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """moto's S3 server with ``bucket`` in it, in this process's environment (so a spotrun
    server started meanwhile, and every instance it launches, stores to it); yields its
    URL, and puts the environment back and stops it afterwards."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    moto.start()
    s3_url = f"http://127.0.0.1:{moto._port}"
    saved = dict(os.environ)
    # moto takes any key
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_S3": s3_url,
            "AWS_ACCESS_KEY_ID": "moto",
            "AWS_SECRET_ACCESS_KEY": "moto",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    try:
        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=bucket)
        yield s3_url
    finally:
        os.environ.clear()
        os.environ.update(saved)
        moto.stop()


@contextlib.contextmanager
def sdk_stack(root: Path, bucket: str) -> Iterator[tuple[Server, str, Path]]:
    """moto's S3 server with ``bucket`` in it and a spotrun server whose instances store
    to it; yields (server, S3 endpoint URL, root) and stops both afterwards."""
    with s3_server(bucket) as s3_url:
        # AWS's algorithm images map to the built-ins, and spotrun/python:* to script mode,
        # with no image mappings of the server's own
        server = Server(root / "spotrun")
        try:
            yield server, s3_url, root
        finally:
            stop_service(server.settings)


def sdk_session(
    stack: tuple[Server, str, Path], bucket: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """A SageMaker SDK session that talks to spotrun and moto, signed with spotrun's key."""
    import sagemaker

    server, s3_url, root = stack
    config = root / "sdk-config.yaml"  # the SDK's documented telemetry opt-out
    config.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
        "      TelemetryOptOut: true\n"
    )
    access, secret = server.key
    for k, v in {
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "AWS_ENDPOINT_URL_SAGEMAKER": server.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": server.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH": server.url,
        "AWS_ENDPOINT_URL_S3": s3_url,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
    }.items():
        monkeypatch.setenv(k, v)
    return sagemaker.Session(
        boto_session=boto3.Session(region_name="us-east-1"), default_bucket=bucket
    )

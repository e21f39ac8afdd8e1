"""A standalone S3-compatible server (moto's, `pip install "moto[server]"`) in its own process on a free
loopback port: the service reaches it only over HTTP, through boto3 and `s3_endpoint_url`.

It keeps its objects in memory, so a restart comes back empty (the bucket is made again)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.local_service import free_port

ACCESS_KEY = "stemscribe-test"
SECRET_KEY = "stemscribe-test-secret"
REGION = "us-east-1"


class S3Server:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._process is None
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {self.port}") from None
                time.sleep(0.1)
        self.client().create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        """Gone at once: connections to the port are refused until `start`."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
        )  # fmt: skip

    def objects(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Key -> {"Size", "ETag"} of every object under `prefix`, as the server lists them."""
        found: dict[str, dict[str, Any]] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = {"Size": item["Size"], "ETag": item["ETag"].strip('"')}
        return found

    def settings(self, prefix: str) -> dict[str, Any]:
        """The service's settings for this server; credentials travel as settings, not environment."""
        return {
            "storage_backend": "s3", "s3_bucket": self.bucket, "s3_prefix": prefix, "s3_endpoint_url": self.url,
            "s3_region": REGION, "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY,
            "s3_addressing_style": "path",
        }  # fmt: skip

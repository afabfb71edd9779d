"""Finding 7 of issue 10: s3:// and gs:// sources are fetched with what the serving image has.

Dockerfile.triton.trt_llm_backend (tensorrtllm_backend v1.0.0) installs python3, pip and git-lfs on
tritonserver's py3-min image: no AWS CLI, no Google Cloud SDK. The old fetch ran ``aws s3 sync`` and
``gcloud storage rsync`` and would fail with "command not found". The downloader runs here against
stand-in client libraries (the same calls boto3 and google-cloud-storage answer), so its listing,
prefix and path handling are what is tested; a real bucket is not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deepseek_operator.api.spec import parse_spec
from deepseek_operator.builders import fetch
from deepseek_operator.errors import SpecError

FAKE_BOTO3 = """
import os, shutil
ROOT = os.environ["FAKE_BUCKETS"]
class _Pages:
    def paginate(self, Bucket, Prefix):
        keys = []
        for base, _, files in os.walk(os.path.join(ROOT, Bucket)):
            for f in files:
                key = os.path.relpath(os.path.join(base, f), os.path.join(ROOT, Bucket))
                if key.startswith(Prefix):
                    keys.append(key)
        keys.sort()
        for i in range(0, len(keys), 2):  # two per page: paging must be followed
            yield {"Contents": [{"Key": k} for k in keys[i:i + 2]]}
        if not keys:
            yield {}
class _S3:
    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return _Pages()
    def download_file(self, bucket, key, path):
        shutil.copy(os.path.join(ROOT, bucket, key), path)
def client(name, endpoint_url=None):
    assert name == "s3"
    return _S3()
"""

FAKE_GCS = """
import os, shutil
ROOT = os.environ["FAKE_BUCKETS"]
class _Blob:
    def __init__(self, bucket, name):
        self.bucket, self.name = bucket, name
    def download_to_filename(self, path):
        shutil.copy(os.path.join(ROOT, self.bucket, self.name), path)
class Client:
    def list_blobs(self, bucket, prefix=""):
        for base, _, files in os.walk(os.path.join(ROOT, bucket)):
            for f in files:
                name = os.path.relpath(os.path.join(base, f), os.path.join(ROOT, bucket))
                if name.startswith(prefix):
                    yield _Blob(bucket, name)
"""


def _fakes(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "google" / "cloud" / "storage").mkdir(parents=True)
    (lib / "boto3.py").write_text(FAKE_BOTO3)
    (lib / "google" / "__init__.py").write_text("")
    (lib / "google" / "cloud" / "__init__.py").write_text("")
    (lib / "google" / "cloud" / "storage" / "__init__.py").write_text(FAKE_GCS)
    bucket = tmp_path / "buckets" / "models"
    for key in ("r1/config.json", "r1/sub/model-00001.safetensors", "r1/tokenizer.json", "r10/other.bin"):
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_text(key)
    return lib


def _download(tmp_path: Path, uri: str) -> subprocess.CompletedProcess[str]:
    lib = _fakes(tmp_path)
    env = {"PYTHONPATH": str(lib), "FAKE_BUCKETS": str(tmp_path / "buckets"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", fetch.DOWNLOADER, uri, str(tmp_path / "dest")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_downloader_fetches_exactly_the_prefix_keeping_paths(tmp_path: Path, scheme: str) -> None:
    done = _download(tmp_path, f"{scheme}://models/r1")
    assert done.returncode == 0, done.stderr
    got = sorted(str(p.relative_to(tmp_path / "dest")) for p in (tmp_path / "dest").rglob("*") if p.is_file())
    # r10/ shares the characters but not the path segment: it stays out.
    assert got == ["config.json", "sub/model-00001.safetensors", "tokenizer.json"]
    assert (
        tmp_path / "dest" / "sub" / "model-00001.safetensors"
    ).read_text() == "r1/sub/model-00001.safetensors"


def test_downloader_refuses_an_empty_prefix_naming_the_field(tmp_path: Path) -> None:
    done = _download(tmp_path, "s3://models/nothing-here")
    assert done.returncode != 0 and "spec.model.source.uri" in done.stderr


def _spec(uri: str, **source: Any) -> Any:
    return parse_spec(
        {"model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "source": {"uri": uri, **source}}}
    )


@pytest.mark.parametrize(("uri", "package"), [("s3://b/m", "boto3"), ("gs://b/m", "google-cloud-storage")])
def test_fetch_uses_python_not_cloud_clis(uri: str, package: str) -> None:
    command = fetch.fetch_command(_spec(uri), "/ckpt")
    assert "aws " not in command and "gcloud " not in command
    assert f"--target /tmp/deepseek-fetch {package} && PYTHONPATH=/tmp/deepseek-fetch python3 -c" in command
    assert "python3 -m pip install" in command
    assert "python3 -c" in command and "/ckpt/.READY" in command


def test_package_index_reaches_pip() -> None:
    spec = _spec("s3://b/m", packageIndex="https://pypi.internal.example/simple")
    assert fetch.fetch_env(spec) == [
        {"name": "PIP_INDEX_URL", "value": "https://pypi.internal.example/simple"}
    ]
    assert fetch.fetch_env(_spec("hf://deepseek-ai/x", packageIndex="https://p/simple")) == []
    with pytest.raises(SpecError, match=r"spec.model.source.packageIndex: .*http:// or https://"):
        _spec("s3://b/m", packageIndex="pypi.internal")


def test_every_scheme_uses_only_what_the_profile_says_is_installed() -> None:
    from deepseek_operator.images import default_profile  # noqa: PLC0415

    installed = default_profile().installed
    for tools in fetch.SCHEME_TOOLS.values():
        assert all(installed[t] for t in tools)
    assert not installed["aws"] and not installed["gcloud"]

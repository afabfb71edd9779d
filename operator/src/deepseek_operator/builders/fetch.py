"""The model download of a ``uri`` source, as the fetch init container runs it in the serving image.

The Triton TensorRT-LLM image has Python, pip and curl, but neither the AWS CLI nor the Google
Cloud SDK (its profile, ``installed``). So s3:// and gs:// are fetched by :data:`DOWNLOADER`, a
small Python program run with the image's ``python3``, after pip installs its one client library
(boto3, or google-cloud-storage) into a scratch folder, from ``spec.model.source.packageIndex``
when the cluster reaches no public index. hf:// uses huggingface_hub (a dependency of the image's
transformers); https:// is a tarball fetched with curl. Pure: spec in, shell out.
"""

from __future__ import annotations

import shlex

from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.errors import SpecError
from deepseek_operator.images import profile_for

DEPS_DIR = "/tmp/deepseek-fetch"  # where pip puts the client library (the container's own /tmp)
CLIENT_PACKAGES = {"s3": "boto3", "gs": "google-cloud-storage"}
# What each scheme runs in the image; every entry must be installed according to its profile.
SCHEME_TOOLS = {"s3": ("python3", "pip"), "gs": ("python3", "pip"), "hf": ("python3",), "https": ("curl",)}

# Lists the objects under the uri's prefix (a whole path segment: s3://b/m does not take b/m2/...)
# and writes each below the destination, keeping its path; none found is an error naming the field.
DOWNLOADER = """\
import os, sys
uri, dest = sys.argv[1], sys.argv[2]
scheme, _, rest = uri.partition("://")
bucket, _, prefix = rest.partition("/")
prefix = prefix.strip("/")
want = prefix + "/" if prefix else ""
def place(key):
    rel = key[len(want):]
    if not key.startswith(want) or not rel or rel.endswith("/"):
        return None
    path = os.path.join(dest, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
count = 0
if scheme == "s3":
    import boto3
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=want):
        for obj in page.get("Contents", []):
            path = place(obj["Key"])
            if path:
                s3.download_file(bucket, obj["Key"], path)
                count += 1
elif scheme == "gs":
    from google.cloud import storage
    for blob in storage.Client().list_blobs(bucket, prefix=want):
        path = place(blob.name)
        if path:
            blob.download_to_filename(path)
            count += 1
else:
    sys.exit("deepseek-operator fetch: unsupported scheme " + scheme)
if not count:
    sys.exit("deepseek-operator fetch: no objects under " + uri + "; check spec.model.source.uri and "
             "that spec.model.source.credentialsSecret can read it")
print("deepseek-operator fetch: %d objects from %s" % (count, uri))
"""


def _scheme(uri: str) -> str:
    return uri.partition("://")[0]


def check_tools(spec: DeploymentSpec) -> None:
    """:class:`SpecError` when the image (per its profile) lacks what the uri's scheme runs."""
    uri = spec.model.source.uri or ""
    profile = profile_for(spec.engine.image).profile
    missing = [t for t in SCHEME_TOOLS.get(_scheme(uri), ()) if not profile.installed.get(t, False)]
    if missing:
        raise SpecError(
            f"spec.model.source.uri: {_scheme(uri)}:// needs {', '.join(missing)} in the serving image, "
            f"which {profile.label} does not have (profile: {profile.sources.get('installed', '')}); "
            "use a pvc source"
        )


def fetch_command(spec: DeploymentSpec, checkpoint_dir: str) -> str:
    """Shell that downloads the uri source into ``checkpoint_dir`` once (a READY marker guards it)."""
    check_tools(spec)
    uri = spec.model.source.uri or ""
    dest = shlex.quote(checkpoint_dir)
    rev = shlex.quote(spec.model.revision)
    scheme = _scheme(uri)
    if scheme == "hf":
        repo = shlex.quote(uri.removeprefix("hf://"))
        get = (
            f"python3 -c 'import sys; from huggingface_hub import snapshot_download as s; "
            f"s(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3])' {repo} {rev} {dest}"
        )
    elif scheme in CLIENT_PACKAGES:
        deps = shlex.quote(DEPS_DIR)
        get = (
            f"python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --target {deps} "
            f"{CLIENT_PACKAGES[scheme]} && PYTHONPATH={deps} python3 -c {shlex.quote(DOWNLOADER)} "
            f"{shlex.quote(uri)} {dest}"
        )
    else:
        get = f"mkdir -p {dest} && curl -fsSL {shlex.quote(uri)} | tar -xz -C {dest}"
    return f"set -eu; if [ -f {dest}/.READY ]; then exit 0; fi; mkdir -p {dest}; {get}; touch {dest}/.READY"


def fetch_env(spec: DeploymentSpec) -> list[dict[str, str]]:
    """Environment of the fetch container beyond credentials: the package index pip installs from."""
    index = spec.package_index
    if not index or _scheme(spec.model.source.uri or "") not in CLIENT_PACKAGES:
        return []
    return [{"name": "PIP_INDEX_URL", "value": index}]

"""Locating the cached control-plane programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepseek_operator.errors import ToolsMissingError
from deepseek_operator.sim.tools import parse_versions, tool_path, versions_file


def test_versions_file_pins_every_tool() -> None:
    versions = parse_versions(versions_file().read_text())
    for key in ("KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION"):
        assert versions[key].startswith("v"), key
    assert versions["ETCD_VERSION"].startswith("v3.6.")


def test_parse_versions_ignores_comments_and_quotes() -> None:
    assert parse_versions("# c\nA=v1 # trailing\n\nB='v2'\nnot a pair\n") == {"A": "v1", "B": "v2"}


def test_missing_tool_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSO_TOOLS_BIN", raising=False)
    monkeypatch.setenv("DSO_TOOLS_CACHE", str(tmp_path))
    with pytest.raises(ToolsMissingError, match="make tools") as info:
        tool_path("etcd", {"ETCD_VERSION": "v3.6.99"})
    assert str(tmp_path / "tools" / "etcd-v3.6.99" / "etcd") in str(info.value)


def test_cache_is_keyed_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSO_TOOLS_BIN", raising=False)
    monkeypatch.setenv("DSO_TOOLS_CACHE", str(tmp_path))
    binary = tmp_path / "tools" / "kubernetes-v1.2.3" / "kubectl"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert tool_path("kubectl", {"KUBERNETES_VERSION": "v1.2.3"}) == binary
    with pytest.raises(ToolsMissingError):
        tool_path("kubectl", {"KUBERNETES_VERSION": "v1.2.4"})

"""crds/ is the one source of the CRDs: the chart's copies (and the kustomize base's) equal it."""

from __future__ import annotations

from deepseek_operator.sim.tools import repo_root


def test_the_charts_crds_are_the_projects_crds() -> None:
    source = {p.name: p.read_bytes() for p in (repo_root() / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (repo_root() / "charts/deepseek-operator/crds").glob("*.yaml")}
    assert source, "no CRDs in crds/"
    assert set(chart) == set(source), (
        "run `make chart` (hack/sync-chart-crds.sh) to copy crds/ into the chart"
    )
    for name, text in source.items():
        assert chart[name] == text, (
            f"charts/deepseek-operator/crds/{name} differs from crds/{name}: run `make chart`"
        )

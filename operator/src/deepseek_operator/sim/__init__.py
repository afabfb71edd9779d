"""The embedded simulated cluster: a real control plane with simulated GPU nodes.

``SimCluster`` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok on 127.0.0.1; ``parse_gpu_spec`` reads pool specs like ``h100:2x8``.
The test fixtures live in the test tree (``tests/support/plugin.py``), not in the package.
"""

from deepseek_operator.sim.cluster import SimCluster, running_cluster
from deepseek_operator.sim.gpus import GPU_PRODUCTS, GPUPool, parse_gpu_spec

__all__ = ["GPU_PRODUCTS", "GPUPool", "SimCluster", "parse_gpu_spec", "running_cluster"]

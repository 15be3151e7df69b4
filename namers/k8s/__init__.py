"""`io.l5d.k8s`: the Kubernetes namer, its API client setup and its shared watches.

The daemonset and localnode transformers (transformers/k8s.py) reuse `api`
and `watch` from here so one API server connection and one watch per object
serve the whole process.
"""

from namers.k8s.namer import KIND, K8sNamer, build

__all__ = ["KIND", "K8sNamer", "build"]

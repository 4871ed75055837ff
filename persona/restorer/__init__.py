"""The production restorer's policy side: a learned restore policy exported to ONNX.

Loads ``<policy>.onnx`` + ``<policy>.json`` (written by ``persona export``) with onnxruntime
and numpy only - importing this package never imports torch or stable-baselines3 - and

* decides online: :meth:`OnnxRestorePolicy.act` maps an observation + action mask to an
  action (the same contract as the simulator's policies), and
* plans offline: :func:`plan_restore` turns a persona manifest into an ordered restore plan
  with allocation levels, by running the policy closed-loop on the simulator of that
  persona on the target host.
"""

from persona.restorer.plan import PlanStep, RestorePlan, plan_restore
from persona.restorer.policy import OnnxRestorePolicy, load_sidecar

__all__ = ["OnnxRestorePolicy", "PlanStep", "RestorePlan", "load_sidecar", "plan_restore"]

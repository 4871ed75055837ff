"""persona.restorer: no torch/SB3 on import; a manifest becomes an ordered restore plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from persona.errors import PolicyError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def test_import_does_not_load_torch_or_sb3(tiny_onnx: Path) -> None:
    code = (
        "import sys\n"
        "import persona.restorer as r\n"
        f"p = r.OnnxRestorePolicy({str(tiny_onnx)!r})\n"
        "plan = r.plan_restore('scenario://lab-demo', p)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'stable_baselines3', 'sb3_contrib'))\n"
        "print(heavy, len(plan.steps))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    heavy, n = r.stdout.strip().rsplit(" ", 1)
    assert heavy == "[]"
    assert int(n) >= 9  # lab-demo has 9 components: each is started at least once


def test_plan_covers_every_component_in_dependency_order(tiny_onnx: Path) -> None:
    from envs.scenarios import resolve
    from persona.restorer import plan_restore

    plan = plan_restore("scenario://lab-demo", tiny_onnx)
    sc = resolve("scenario://lab-demo").sample(None)  # type: ignore[arg-type]
    names = sc.manifest.names
    first_start = {}
    for s in plan.steps:
        first_start.setdefault(s.component, s.t)
    assert set(first_start) == set(names)
    # a component never starts before its hard dependencies did
    for c in sc.manifest.components:
        for dep in c.depends_on:
            assert first_start[dep] <= first_start[c.name], (c.name, dep)
    assert plan.predicted_ttr > 0
    d = plan.to_dict()
    assert json.loads(json.dumps(d))["steps"][0]["component"] == plan.steps[0].component
    assert "predicted time to recovery" in plan.format()


def test_plan_from_manifest_object_and_errors(tiny_onnx: Path) -> None:
    from envs.scenarios import resolve
    from envs.sim.params import HostSpec
    from persona.restorer import plan_restore

    sc = resolve("scenario://lab-demo").sample(None)  # type: ignore[arg-type]
    plan = plan_restore(sc.manifest, tiny_onnx, host=HostSpec(slots=1, cpu_cores=4.0))
    assert plan.host.slots == 1
    assert len({s.t for s in plan.steps}) == len(plan.steps)  # one slot: one start at a time
    with pytest.raises(PolicyError, match="family"):
        plan_restore("generator://mixed-v0", tiny_onnx)


def test_search_restorer_plans_and_stays_torch_free(tiny_onnx: Path, tmp_path: Path) -> None:
    """``search:POLICY.onnx@MODEL.json`` plans with the learned policy + a learned model,
    through the restorer and the provisioner's plan_from_policy, without torch or SB3."""
    from agents.model_learning import LearnedModel

    model = tmp_path / "m.json"
    lm = LearnedModel({("app", "db"): 0.6, ("worker", "queue"): 0.7}, {"db": (0.35, 0.08)})
    model.write_text(json.dumps(lm.to_json()))
    spec = f"search:{tiny_onnx}@{model}@2"
    code = (
        "import sys\n"
        "import persona.restorer as r\n"
        "from persona.provision.plan import plan_from_policy\n"
        "from envs.scenarios import resolve\n"
        f"plan = r.plan_restore('scenario://lab-demo', {spec!r})\n"
        "m = resolve('scenario://lab-demo').sample(None).manifest\n"
        f"p = plan_from_policy(m, {spec!r})\n"
        "heavy = sorted(x for x in sys.modules if x.split('.')[0] in "
        "('torch', 'stable_baselines3', 'sb3_contrib'))\n"
        "print(heavy, plan.policy == " + repr(spec) + ", p.policy, len(p.steps))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("] ")[0] == "["
    assert " True search(tiny) 9" in r.stdout

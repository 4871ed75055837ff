"""Calibration of step durations from measured runs, and the VM-host flavour that uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.calibration import dump_kind_models, fit_kind_models, load_kind_models
from envs.restore_env import RestoreEnv
from envs.scenarios import resolve
from envs.sim.params import DEFAULT_KIND_MODELS, SimConfig, compile_episode
from persona.errors import ScenarioError
from persona.model import ComponentKind


def test_fit_is_the_log_normal_of_the_measurements(tmp_path):
    steps = [{"kind": "kernel_module", "seconds": s} for s in (0.05, 0.08, 0.1)]
    steps.append({"kind": "process", "seconds": 4.0})
    models = fit_kind_models(steps)
    km = models[ComponentKind.KERNEL_MODULE]
    logs = [math.log(s) for s in (0.05, 0.08, 0.1)]
    assert km.cpu_base_s == pytest.approx(math.exp(sum(logs) / 3), rel=1e-5)
    assert km.sigma == pytest.approx(float(np.std(logs, ddof=1)), rel=1e-5)
    assert models[ComponentKind.PROCESS].sigma == 0.05  # one sample: the floor
    assert models[ComponentKind.FILESYSTEM] == DEFAULT_KIND_MODELS[ComponentKind.FILESYSTEM]
    path = tmp_path / "m.yaml"
    path.write_text(dump_kind_models(models, "test"))
    assert load_kind_models(path) == models


@pytest.mark.parametrize(
    "bad", [{"kind": "daemon", "seconds": 1}, {"kind": "config"}, {"kind": "config", "seconds": -1}]
)
def test_bad_measurements(bad):
    with pytest.raises(ScenarioError):
        fit_kind_models([bad])


def test_vm_flavour_uses_the_measured_durations():
    vm = resolve("generator://web-tier-v0?components=10&host=vm")
    ct = resolve("generator://web-tier-v0?components=10")
    a, b = vm.sample(np.random.default_rng(3)), ct.sample(np.random.default_rng(3))
    assert a.manifest == b.manifest and a.name.endswith("@vm") and a.host.slots == 1
    cfg = SimConfig()
    pa = compile_episode(a, cfg, np.random.default_rng(0))
    pb = compile_episode(b, cfg, np.random.default_rng(0))
    km = pa.kind == list(ComponentKind).index(ComponentKind.KERNEL_MODULE)
    assert km.any()
    measured = a.kind_models[ComponentKind.KERNEL_MODULE].cpu_base_s
    assert np.allclose(pa.cpu_work[km], measured, rtol=1e-6)  # size-independent, as measured
    assert not np.allclose(pa.cpu_work, pb.cpu_work)
    assert vm.name == "generator://web-tier-v0?components=10&host=vm"


def test_vm_flavour_env_runs_and_bad_flavour():
    env = RestoreEnv("generator://mixed-v0?components=5-9&host=vm")
    _, info = env.reset(seed=0)
    assert info["scenario"].endswith("@vm")
    with pytest.raises(ScenarioError, match="host='moon'"):
        resolve("generator://mixed-v0?host=moon")

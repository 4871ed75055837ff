"""Shared fixtures: one tiny trained run (seconds), exported once, for the learn tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agents.train import TrainConfig, TrainResult, config_from_dict, train

TINY: dict = {
    "name": "tiny",
    "scenarios": "generator://mixed-v0?components=4-8",
    "max_components": 10,
    "timesteps": 1024,
    "seed": 3,
    "n_envs": 4,
    "torch_threads": 1,
    "checkpoint_every": 512,
    "ppo": {"n_steps": 64, "batch_size": 128, "n_epochs": 2},
    "net": {"dim": 16, "heads": 2, "layers": 1},
    "eval": {"every_steps": 512, "episodes": 3, "seed": 5},
}


def tiny_config(**changes: object) -> TrainConfig:
    return config_from_dict({**TINY, **changes})


@pytest.fixture
def make_tiny_config() -> Callable[..., TrainConfig]:
    return tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(tiny_config(), out=tmp_path_factory.mktemp("runs"), progress=False)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agents.export import export_run

    out = tmp_path_factory.mktemp("policy") / "tiny.onnx"
    export_run(tiny_run.run_dir, out)
    return out

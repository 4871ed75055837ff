"""Gymnasium environments of persona. ``import envs`` registers them.

* ``persona/Restore-v0`` - restore ordering and allocation (:mod:`envs.restore_env`).
"""

from gymnasium.envs.registration import register, registry

ENV_IDS = ("persona/Restore-v0",)

if "persona/Restore-v0" not in registry:
    register(
        id="persona/Restore-v0",
        entry_point="envs.restore_env:RestoreEnv",
        # Episodes end by themselves (validation or the simulated time budget).
        max_episode_steps=None,
        nondeterministic=False,
    )

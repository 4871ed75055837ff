"""Gymnasium environments of persona. ``import envs`` registers them.

* ``persona/Restore-v0`` - restore ordering and allocation (:mod:`envs.restore_env`).
* ``persona/RestoreLive-v0`` - the same env on the live backend (``backend="live"``: a real
  lab host per episode, :mod:`envs.live`); registered ``nondeterministic=True``. Not in
  ``ENV_IDS``, whose checks need no lab.
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

if "persona/RestoreLive-v0" not in registry:
    register(
        id="persona/RestoreLive-v0",
        entry_point="envs.restore_env:RestoreEnv",
        kwargs={"backend": "live"},
        max_episode_steps=None,
        # real seconds, a real host: the same seed does not give the same episode
        nondeterministic=True,
    )

"""The restore simulator: frozen params (:mod:`envs.sim.params`) and pure dynamics (:mod:`envs.sim.core`)."""

"""The live lab: a Docker engine with CRIU, locally built images, a project-owned network and
the demo host (several containers sharing one network namespace). See docs/lab.md."""

"""The Persona Capture Module: freeze a live host, checkpoint it, and describe every facet of
its persona (processes and memory, filesystem, network, kernel modules, resources, config,
metadata) as a persona manifest plus data files."""

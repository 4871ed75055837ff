"""One error root for the whole project.

Library errors (docker, botocore, OSError, yaml, ...) are translated once, at the adapter
edge, with ``raise ... from e``. Every message says what was wrong and what to do about it.
"""

from __future__ import annotations


class PersonaError(Exception):
    """Root of every error persona raises on purpose."""


class ManifestError(PersonaError):
    """A persona manifest is malformed. ``field`` names the offending field (a JSON path)."""

    def __init__(self, message: str, field: str | None = None, source: str | None = None) -> None:
        self.message = message
        self.field = field
        self.source = source
        text = f"{field}: {message}" if field else message
        super().__init__(f"{source}: {text}" if source else text)


class ScenarioError(PersonaError):
    """A scenario URI, file or generator parameter is invalid."""


class ConfigError(PersonaError):
    """A configuration file or command-line option is invalid."""


class PolicyError(PersonaError):
    """A policy name or file cannot be used."""


class CaptureError(PersonaError):
    """Capturing a host's persona failed; nothing partial was stored."""


class StoreError(PersonaError):
    """A persona store operation failed; earlier data is intact."""


class IntegrityError(StoreError):
    """Stored data does not match its hash, or an object is missing."""


class RestoreError(PersonaError):
    """Applying a persona to a replacement host failed; the replacement was removed."""


class ValidationError(PersonaError):
    """The behavioural validation suite could not run (not: the replacement failed it)."""


class LabError(PersonaError):
    """The live lab (Docker engine, CRIU, images, networks) is missing or broken."""


class VmError(PersonaError):
    """A virtual machine (QEMU, its image, its guest agent) is missing, broken or timed out."""

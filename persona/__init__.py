"""persona: adaptive host persona cloning.

Capture everything that makes a host behave the way it does, store it versioned and
delta-compressed, restore it onto a replacement host, and prove the replacement behaves
like the original. The order and allocations of a restore are learned (see ``envs``).
"""

__version__ = "0.1.0"

"""Inclavare Containers: confidential-computing containers.

Subpackages follow one direction of dependencies (see docs in the README):
cli -> runtime -> (oci | linux | cgroups). Lower layers never import upper ones.
"""

__version__ = "0.1.0"

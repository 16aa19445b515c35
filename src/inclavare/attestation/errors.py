"""Errors of the attestation package.

Two different things can go wrong while checking evidence, and they are kept apart:

- the *input* is unusable (not a known evidence format, an unreadable policy, a missing
  certificate the evidence kind needs): an `InclavareError`, reported as one line with exit
  code 2;
- the evidence is recognised but does not hold up (bad signature, broken chain, expired
  certificate, malformed field): `VerificationFailed`, which never leaves the verifiers. The
  verifier turns it into a `Verdict` with `verified: false` and the reason.
"""

from __future__ import annotations

from inclavare.errors import InclavareError


class AttestationInputError(InclavareError):
    """An input of the verifier cannot be used (exit code 2)."""


class UnrecognisedEvidence(AttestationInputError):
    """The bytes are none of the evidence formats this verifier knows."""


class MissingInput(AttestationInputError):
    """The evidence kind needs an input that was not given (e.g. a VCEK for SEV-SNP)."""


class PolicyError(AttestationInputError):
    """The policy file is malformed or names an unknown rule."""


class MalformedEvidence(Exception):
    """A recognised structure violates its format (too short, bad length, bad encoding).

    Raised by the pure parsers. The message names the structure and the problem.
    """


class VerificationFailed(Exception):
    """A check failed; the message is the verdict's reason."""

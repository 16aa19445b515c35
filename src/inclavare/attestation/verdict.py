"""The result of verifying evidence: a value, not an exception.

A verdict says whether the evidence verified, which TEE produced it, the claims it carries,
the TCB status, the certificate chain that was checked and what deserves attention. Its JSON
form is what `shelter verify --json` prints and what other tools read:

    {"verified": bool, "tee": "sgx"|"tdx"|"snp"|"epid"|"sim", "reason": str (only when not
     verified), "claims": {...}, "tcb_status": str, "chain": [subjects, leaf to root],
     "warnings": [str, ...]}

Claims come only from evidence whose signatures verified: when a signature, a chain or a
binding fails, `claims` is empty, so nothing downstream can mistake unverified measurements
for genuine ones. When only the policy fails, the evidence is genuine and its claims are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

Tee = Literal["sgx", "tdx", "snp", "epid", "sim"]

# Claim values are JSON values: byte strings become lowercase hex before they get here.
ClaimValue = str | int | bool | Mapping[str, int]

TCB_NOT_EVALUATED = "not evaluated"

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)


@dataclass(frozen=True)
class Verdict:
    verified: bool
    tee: Tee
    reason: str | None = None
    claims: Mapping[str, ClaimValue] = field(default_factory=dict)
    tcb_status: str = TCB_NOT_EVALUATED
    chain: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def failure(
        cls, tee: Tee, reason: str, chain: tuple[str, ...] = (), warnings: tuple[str, ...] = ()
    ) -> Verdict:
        return cls(False, tee, reason, {}, TCB_NOT_EVALUATED, chain, warnings)

    def rejected(self, reason: str) -> Verdict:
        """This verdict, failed for `reason` although its evidence is genuine (a policy failure)."""
        return replace(self, verified=False, reason=reason)

    def with_warnings(self, *warnings: str) -> Verdict:
        return replace(self, warnings=self.warnings + tuple(warnings))

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"verified": self.verified, "tee": self.tee}
        if not self.verified:
            document["reason"] = self.reason or "not verified"
        document["claims"] = {
            key: dict(value) if isinstance(value, Mapping) else value
            for key, value in self.claims.items()
        }
        document["tcb_status"] = self.tcb_status
        document["chain"] = list(self.chain)
        document["warnings"] = list(self.warnings)
        return document

    def summary(self) -> str:
        """A short human-readable account of the verdict."""
        lines = [
            f"{'VERIFIED' if self.verified else 'NOT VERIFIED'}: {self.tee} evidence"
            + ("" if self.verified else f": {self.reason}")
        ]
        if self.claims:
            for key in SUMMARY_CLAIMS.get(self.tee, ()):
                if key in self.claims:
                    lines.append(f"  {key}: {_format_claim(self.claims[key])}")
        lines.append(f"  tcb_status: {self.tcb_status}")
        if self.chain:
            lines.append(f"  chain: {' <- '.join(_short_subject(s) for s in self.chain)}")
        lines.extend(f"  warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


SUMMARY_CLAIMS: dict[str, tuple[str, ...]] = {
    "sgx": ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug", "report_data"),
    "epid": ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug", "report_data"),
    "sim": ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug", "report_data"),
    "tdx": ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "debug", "report_data"),
    "snp": ("product", "measurement", "report_data", "policy", "debug", "vmpl", "reported_tcb"),
}


def _format_claim(value: ClaimValue) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{key}={item}" for key, item in value.items())
    return str(value).lower() if isinstance(value, bool) else str(value)


def _short_subject(subject: str) -> str:
    for part in subject.split(","):
        if part.startswith("CN="):
            return part[3:]
    return subject

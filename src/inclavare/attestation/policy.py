"""Policies: reference values and rules a verified verdict must also satisfy.

A policy is a TOML or JSON document. Top-level rules apply to every kind of evidence; a table
named after a TEE (`[sgx]`, `[tdx]`, `[snp]`, `[epid]`, `[sim]`) adds or overrides rules for
that TEE only. Example:

    accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
    report_data = "74657374"            # zero-padded to 64 bytes

    [sgx]
    mrenclave = ["8f173e46..."]
    mrsigner = ["83d719e7..."]
    isv_prod_id = 0
    min_isv_svn = 1

    [snp]
    measurement = ["b07af962..."]
    min_tcb = { boot_loader = 3, tee = 0, snp = 8, microcode = 115 }
    forbidden_policy_bits = ["migrate_ma"]

A policy forbids debug enclaves, trust domains and guests unless it says `allow_debug = true`,
and refuses simulated evidence unless it says `allow_simulated = true`. Unknown rules are an
error, so a misspelt rule cannot silently weaken a policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from inclavare.attestation.errors import PolicyError
from inclavare.attestation.snp import POLICY_BITS as SNP_POLICY_BITS
from inclavare.attestation.verdict import TCB_NOT_EVALUATED, TCB_STATUSES, Verdict

TEES = ("sgx", "tdx", "snp", "epid", "sim")

# Claims compared against a list of accepted values (hex), with their size in bytes.
MEASUREMENT_RULES = {
    "mrenclave": 32,
    "mrsigner": 32,
    "mr_td": 48,
    "rtmr0": 48,
    "rtmr1": 48,
    "rtmr2": 48,
    "rtmr3": 48,
    "mr_seam": 48,
    "mr_config_id": 48,
    "mr_owner": 48,
    "mr_owner_config": 48,
    "measurement": 48,
    "host_data": 32,
    "id_key_digest": 48,
    "family_id": 16,
    "image_id": 16,
}
# Claims that must be at least the given number.
MINIMUM_RULES = {"min_isv_svn": "isv_svn", "min_guest_svn": "guest_svn"}
# Claims compared against a list of accepted integers.
INTEGER_RULES = ("isv_prod_id", "vmpl")
TCB_COMPONENTS = ("boot_loader", "tee", "snp", "microcode", "fmc")
OTHER_RULES = (
    "tee",
    "accepted_tcb_statuses",
    "allow_debug",
    "allow_simulated",
    "report_data",
    "nonce",
    "min_tcb",
    "forbidden_policy_bits",
    "required_policy_bits",
)
KNOWN_RULES = frozenset([*MEASUREMENT_RULES, *MINIMUM_RULES, *INTEGER_RULES, *OTHER_RULES])


class PolicyViolation(Exception):
    """The verdict breaks a rule; the message says which and how."""


@dataclass(frozen=True)
class Policy:
    common: Mapping[str, Any]
    per_tee: Mapping[str, Mapping[str, Any]]

    def rules_for(self, tee: str) -> dict[str, Any]:
        rules = dict(self.common)
        rules.update(self.per_tee.get(tee, {}))
        return rules

    @property
    def allow_simulated(self) -> bool:
        return bool(self.rules_for("sim").get("allow_simulated", False))

    def allowing_simulated(self) -> Policy:
        """This policy, with simulated evidence accepted (an explicit choice of the caller)."""
        per_tee = dict(self.per_tee)
        per_tee["sim"] = {**per_tee.get("sim", {}), "allow_simulated": True}
        return Policy(self.common, per_tee)

    def apply(self, verdict: Verdict) -> Verdict:
        """The verdict, rejected with a reason if it breaks a rule (verified verdicts only)."""
        if not verdict.verified:
            return verdict
        try:
            _check(self.rules_for(verdict.tee), verdict)
        except PolicyViolation as violation:
            return verdict.rejected(f"policy: {violation}")
        return verdict


def load_policy(data: bytes, name: str = "policy") -> Policy:
    """Parse a TOML or JSON policy and validate every rule in it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"policy {name} is not UTF-8 text") from None
    document: Any
    if name.endswith(".json") or text.lstrip().startswith("{"):
        import json

        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise PolicyError(f"policy {name} is not valid JSON: {error}") from None
    else:
        import tomllib

        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"policy {name} is not valid TOML: {error}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"policy {name} must be a table of rules")
    common = {key: value for key, value in document.items() if key not in TEES}
    per_tee = {}
    for tee in TEES:
        if tee in document:
            section = document[tee]
            if not isinstance(section, dict):
                raise PolicyError(f"policy {name}: [{tee}] must be a table of rules")
            per_tee[tee] = _validated(section, f"{name} [{tee}]")
    return Policy(_validated(common, name), per_tee)


def _validated(rules: Mapping[str, Any], where: str) -> dict[str, Any]:
    validated: dict[str, Any] = {}
    for key, value in rules.items():
        if key not in KNOWN_RULES:
            raise PolicyError(f"policy {where}: unknown rule {key!r}")
        validator = _VALIDATORS.get(key)
        try:
            if validator is not None:
                validated[key] = validator(value)
            elif key in MEASUREMENT_RULES:
                validated[key] = _hex_list(value, MEASUREMENT_RULES[key])
            elif key in MINIMUM_RULES:
                validated[key] = _integer(value)
            else:
                validated[key] = _integer_list(value)
        except (TypeError, ValueError) as error:
            raise PolicyError(f"policy {where}: rule {key!r}: {error}") from None
    return validated


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("must be a non-negative integer")
    return value


def _integer_list(value: Any) -> frozenset[int]:
    values = value if isinstance(value, list) else [value]
    return frozenset(_integer(item) for item in values)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _hex(value: Any, size: int | None) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a hex string")
    text = value.lower().removeprefix("0x")
    raw = bytes.fromhex(text)
    if size is not None and len(raw) != size:
        raise ValueError(f"{text[:16]}... must be {size} bytes, not {len(raw)}")
    return raw.hex()


def _hex_list(value: Any, size: int) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must list at least one accepted value")
    return frozenset(_hex(item, size) for item in values)


def _report_data(value: Any) -> str:
    raw = bytes.fromhex(_hex(value, None))
    if len(raw) > 64:
        raise ValueError("report data is at most 64 bytes")
    return raw.ljust(64, b"\0").hex()


def _tees(value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    unknown = [item for item in values if item not in TEES]
    if unknown:
        raise ValueError(f"unknown TEE {unknown[0]!r} (known: {', '.join(TEES)})")
    return frozenset(values)


def _statuses(value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    known = (*TCB_STATUSES, TCB_NOT_EVALUATED)
    unknown = [item for item in values if item not in known]
    if unknown:
        raise ValueError(f"unknown TCB status {unknown[0]!r} (known: {', '.join(known)})")
    return frozenset(values)


def _minimum_tcb(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("must be a table of TCB components")
    unknown = [key for key in value if key not in TCB_COMPONENTS]
    if unknown:
        raise ValueError(f"unknown TCB component {unknown[0]!r}")
    return {key: _integer(item) for key, item in value.items()}


def _policy_bits(value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    unknown = [item for item in values if item not in SNP_POLICY_BITS]
    if unknown:
        raise ValueError(f"unknown guest policy bit {unknown[0]!r}")
    return frozenset(values)


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "tee": _tees,
    "accepted_tcb_statuses": _statuses,
    "allow_debug": _boolean,
    "allow_simulated": _boolean,
    "report_data": _report_data,
    "nonce": lambda value: _hex(value, None),
    "min_tcb": _minimum_tcb,
    "forbidden_policy_bits": _policy_bits,
    "required_policy_bits": _policy_bits,
}


# --- evaluation -----------------------------------------------------------------------------


def _claim(verdict: Verdict, name: str, rule: str) -> Any:
    if name not in verdict.claims:
        raise PolicyViolation(f"rule {rule!r} does not apply to {verdict.tee} evidence")
    return verdict.claims[name]


def _check(rules: Mapping[str, Any], verdict: Verdict) -> None:
    claims = verdict.claims
    if "tee" in rules and verdict.tee not in rules["tee"]:
        raise PolicyViolation(f"{verdict.tee} evidence is not accepted")
    if verdict.tee == "sim" and not rules.get("allow_simulated", False):
        raise PolicyViolation("simulated evidence is not accepted")
    if claims.get("debug") is True and not rules.get("allow_debug", False):
        raise PolicyViolation(f"{verdict.tee} evidence in debug mode is not accepted")
    statuses = rules.get("accepted_tcb_statuses")
    if statuses is not None and verdict.tcb_status not in statuses:
        raise PolicyViolation(f"TCB status {verdict.tcb_status!r} is not accepted")
    for rule in MEASUREMENT_RULES:
        if rule in rules and _claim(verdict, rule, rule) not in rules[rule]:
            raise PolicyViolation(f"{rule} {claims[rule]} is not an accepted value")
    for rule in INTEGER_RULES:
        if rule in rules and _claim(verdict, rule, rule) not in rules[rule]:
            raise PolicyViolation(f"{rule} {claims[rule]} is not an accepted value")
    for rule, claim in MINIMUM_RULES.items():
        if rule in rules and _claim(verdict, claim, rule) < rules[rule]:
            raise PolicyViolation(f"{claim} {claims[claim]} is below the minimum {rules[rule]}")
    if (
        "report_data" in rules
        and _claim(verdict, "report_data", "report_data") != rules["report_data"]
    ):
        raise PolicyViolation("report_data is not the expected value")
    if "nonce" in rules and _claim(verdict, "nonce", "nonce") != rules["nonce"]:
        raise PolicyViolation("the nonce is not the expected value")
    if "min_tcb" in rules:
        reported = _claim(verdict, "reported_tcb", "min_tcb")
        for component, minimum in rules["min_tcb"].items():
            if component not in reported:
                raise PolicyViolation(f"the reported TCB has no {component} component")
            if reported[component] < minimum:
                raise PolicyViolation(
                    f"reported TCB {component} {reported[component]} is below the minimum {minimum}"
                )
    for rule, wanted in (("forbidden_policy_bits", False), ("required_policy_bits", True)):
        if rule in rules:
            guest_policy = _claim(verdict, "policy", rule)
            for bit in sorted(rules[rule]):
                if bool(guest_policy >> SNP_POLICY_BITS[bit] & 1) != wanted:
                    state = "set" if not wanted else "clear"
                    raise PolicyViolation(f"guest policy bit {bit} is {state}")

"""`sim`: a software TEE that follows SGX's formats byte for byte.

It measures and signs enclaves, refuses to launch one whose files or signature do not match,
MACs local reports, derives sealing keys and produces SGX ECDSA v3 quotes that the project's
verifier checks like hardware quotes, against a per-host root.

It is a simulation: the host's root can read and change everything a sim enclave holds, and
can read the platform's keys. Every piece of evidence it produces says so (its quotes carry
the simulated QE vendor id "INCLAVARE-SIM-QE", its certificates say "simulated", its local
reports carry the key id prefix "SIMULATED-REPORT"), and verifiers refuse it unless told to
accept simulated evidence. The formats are described byte by byte in docs/sim-tee.md.
"""

"""Enclave Attestation Architecture: the pieces that let a party outside the cloud check what
runs in a confidential container (reference values, the node daemon, the verifier's side)."""

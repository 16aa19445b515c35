"""TEE platforms: evidence collection. `sim` is the software TEE that runs everywhere."""

"""The OCI runtime-spec: configuration, state, and the runtime's defaults."""

"""Enclave containers: their configuration, the PAL ABI and the enclave runtimes."""

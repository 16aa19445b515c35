"""Kubernetes pieces: the enclave-memory device plugin (the kubelet's device plugin API
v1beta1) and the node installer that adds rune to containerd's configuration."""

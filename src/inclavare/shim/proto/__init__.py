"""containerd's protobuf messages, generated from the .proto files here by `make protos`."""

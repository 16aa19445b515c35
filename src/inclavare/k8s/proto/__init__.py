"""Messages generated from the .proto files of this directory by `make build`."""

"""containerd-shim-rune-v2: the ttrpc protocol, containerd's Task service driving rune."""

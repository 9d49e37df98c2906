"""sbox: package-manager commands in a sandbox with a network policy."""
__version__ = "0.1.0"

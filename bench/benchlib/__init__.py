"""dhfs benchmark suite library: see bench/README.md."""

"""The `gprocket` command line: one module per subcommand."""

"""The ``keelfs`` command: one module per subcommand group."""

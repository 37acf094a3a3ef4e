"""One module per ``ami-daemon`` subcommand: ``HELP``, ``add_arguments``, ``run``."""

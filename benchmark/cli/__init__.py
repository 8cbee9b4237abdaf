"""The command line on top of the protocol: argument parsing and subcommands (main), the run
that trains, evaluates and submits (runner), and the qualitative figures (visualize)."""

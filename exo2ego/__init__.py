"""The `exo2ego` command line: one entry point whose subcommands live next to the code they run."""

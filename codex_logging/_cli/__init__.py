"""The command line: argument parsing, commands, output; the one place a URL picks a database."""

"""`python -m meshdev`: the same as the `meshdev` command (the process runtime uses it)."""

from meshdev.cli.main import main

main()

"""The `meshdev` command: one click group (main.py) whose subcommands parse, build objects and
hand over; `meshdev load` in load.py. No logic lives here.
"""

"""The request pipeline (pipeline.py): listener -> route -> filters -> forwarding with retries
under the route timeout (forward.py), headers both ways, local replies and the access log.
"""

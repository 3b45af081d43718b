"""The dashboard's live tables: the fast DataTable that paints only changed cells, the keyed
table on top of it, and the row builders for clusters, routes, hosts and pods.
"""

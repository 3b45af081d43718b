"""Routing: the compiled match tables (a virtual host by authority, then the first route that
matches), the retry policy and the request deadlines.
"""

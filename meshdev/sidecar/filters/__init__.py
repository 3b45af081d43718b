"""HTTP filters that act on a routed request before it is forwarded: fault injection and the
local rate limit. New filters (authorization, ...) go here.
"""

"""The dashboard's screens: the main one with its tabs, help, and a route's detail."""

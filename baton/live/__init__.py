"""The live page: a list of workflows and a page per workflow drawing its graph.

views.py (HTML pages), consumers.py (WebSocket snapshot then deltas), layout.py (pure graph
layout). Mounted by baton/urls.py and baton/routing.py.
"""

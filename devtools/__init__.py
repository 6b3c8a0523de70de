"""Development and test tooling: the one-machine stack supervisor, an embedded Tiled server, a simulated-scan runner.

Not used by the production gateway or workers; its Tiled configuration ships as package data (devtools/tiled/).
"""

"""actionproxy: an OpenWhisk-compatible runtime proxy.

Kept import-light on purpose: `actionproxy serve` starts the launcher before the
heavy HTTP stack is imported (see cli.py), so nothing here may pull in aiohttp.
"""

__version__ = "0.1.0"

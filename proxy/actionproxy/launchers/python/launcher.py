"""Starts the Python launcher, whose code is _actionproxy_launcher.py beside this file: imported,
not run as a script, so that its bytecode is cached (a script is compiled on every start)."""

import _actionproxy_launcher

_actionproxy_launcher.main()

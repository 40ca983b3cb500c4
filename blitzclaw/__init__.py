"""The client side of BlitzClaw: the `blitzclaw` command line, and the one HTTP client module
(blitzclaw.client) it shares with the operator console. Nothing here imports the daemon."""

__version__ = "0.1.0"

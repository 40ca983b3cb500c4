"""The Textual operator console (`blitzclaw console`): talks to daemons over HTTP only, through
blitzclaw.client; nothing here imports the daemon."""

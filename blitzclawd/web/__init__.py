"""The users' dashboard: server-rendered pages on the API listener (same origin as the API, so
Clerk's `__session` cookie is the session), with a little JavaScript of our own where it helps.
Pages read through blitzclawd.queries; every change goes through the JSON API (/api/...)."""

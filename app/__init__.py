"""handoff: take slow work off a web app's request path."""

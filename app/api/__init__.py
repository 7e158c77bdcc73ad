"""HTTP only: parse, authorize, call the core, answer."""

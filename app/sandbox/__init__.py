"""Built-in fake SMS, email and AI providers with deterministic synthetic data."""

from app.sandbox.app import create_sandbox_app
from app.sandbox.state import Fault, SandboxState

__all__ = ["Fault", "SandboxState", "create_sandbox_app"]

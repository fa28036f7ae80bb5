"""Access log models."""

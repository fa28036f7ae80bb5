"""EHR link models."""

"""Cerner sandbox models."""

"""Engagement models."""

"""The /demo/ reference client: a static page that behaves like the mobile app (dev/demo only)."""

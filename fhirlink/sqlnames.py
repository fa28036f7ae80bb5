"""Quoted table and column names of a model, for the few statements written as SQL instead of
through the ORM (each says why where it is: a hot path where building and compiling the
queryset cost more than running the query). Names only, worked out once per model: every
value in those statements is a bound parameter."""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import Field, Model


@cache
def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def columns(model: type[Model]) -> dict[str, str]:
    """By field name (a foreign key by its field's name: "connection", not "connection_id")."""
    return {
        field.name: connection.ops.quote_name(field.column)
        for field in model._meta.concrete_fields
        if isinstance(field, Field) and field.column
    }

"""Users and patients in the admin. No password hashes, tokens or secrets are ever shown."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import Patient, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("id",)
    list_display = ("id", "email", "is_staff", "is_active", "email_verified_at", "date_joined")
    list_filter = ("is_staff", "is_active", "groups")
    search_fields = ("email",)
    readonly_fields = ("last_login", "date_joined", "email_verified_at", "deletion_requested_at")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Name", {"fields": ("first_name", "last_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        (
            "Dates",
            {"fields": ("last_login", "date_joined", "email_verified_at", "deletion_requested_at")},
        ),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin[Patient]):
    list_display = ("id", "time_zone", "created_at")
    readonly_fields = ("id", "user", "created_at")
    fields = ("id", "user", "time_zone", "created_at")

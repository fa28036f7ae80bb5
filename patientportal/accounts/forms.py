"""Forms of the sign-in pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm

from .models import User
from .services import normalize_email, time_zone_is_valid


class SignUpForm(forms.Form):
    """E-mail and password (Django's validators), optional names. Never says an address exists."""

    email = forms.EmailField(
        label="E-mail address",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    given_name = forms.CharField(
        label="First name (optional)",
        max_length=150,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "given-name"}),
    )
    family_name = forms.CharField(
        label="Last name (optional)",
        max_length=150,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "family-name"}),
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Repeat the password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    time_zone = forms.CharField(required=False, widget=forms.HiddenInput, max_length=64)

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])

    def clean_time_zone(self) -> str:
        value = self.cleaned_data.get("time_zone") or ""
        return value if time_zone_is_valid(value) else "UTC"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password1 = cleaned.get("password1")
        password2 = cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords do not match.")
        elif password1:
            # The similarity validator compares with the e-mail address and the names.
            candidate = User(
                email=cleaned.get("email", ""),
                first_name=cleaned.get("given_name", ""),
                last_name=cleaned.get("family_name", ""),
            )
            try:
                password_validation.validate_password(password1, candidate)
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return cleaned


class LoginForm(AuthenticationForm):
    """Django's login form with the e-mail address as the username (lower-cased before the
    backends and django-axes see it, so "A@x" and "a@x" count against the same lockout)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "The e-mail address or password is not correct.",
        "inactive": "The e-mail address or password is not correct.",
    }

    def __init__(self, request: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        self.fields["username"].label = "E-mail address"
        self.fields["username"].widget.attrs.update({"autocomplete": "email", "inputmode": "email"})
        self.fields["password"].widget.attrs.update({"autocomplete": "current-password"})

    def clean_username(self) -> str:
        return normalize_email(self.cleaned_data.get("username") or "")


class ResendVerificationForm(forms.Form):
    next = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2000)


class PatientPasswordResetForm(PasswordResetForm):
    """Django's reset form; same answer, in the same time, whether or not the address has an
    account: the e-mail is sent by the background job, which makes the link itself."""

    def clean_email(self) -> str:
        return normalize_email(self.cleaned_data["email"])

    def save(self, *args: Any, **kwargs: Any) -> None:
        from . import tasks

        for user in self.get_users(self.cleaned_data["email"]):
            tasks.send_account_email.delay(tasks.PASSWORD_RESET, user.pk)

"""The sign-in pages, shown in the mobile app's in-app browser during the OAuth authorize step.

Sign-up, login (django-axes locks repeated failures), logout, e-mail verification, password
reset, the OAuth approval page and a welcome page. Messages never reveal whether an address
has an account; no page logs or echoes a code, token or link.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic import FormView, TemplateView
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import get_application_model
from oauth2_provider.views import AuthorizationView
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from . import ratelimit, services
from .forms import LoginForm, PatientPasswordResetForm, ResendVerificationForm, SignUpForm
from .models import User
from .scopes import describe_scopes

logger = logging.getLogger(__name__)

SIGNUP_LIMIT_PER_IP = (10, 3600)
RESEND_LIMIT_PER_USER = (3, 3600)
RESET_LIMIT_PER_ADDRESS = (3, 3600)
RESET_LIMIT_PER_IP = (20, 3600)
_SIGNUP_SESSION_KEY = "accounts_signup"


def safe_next(request: HttpRequest, candidate: str | None) -> str:
    """`candidate` if it is a local URL, else ""."""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def login_url_with_next(next_url: str) -> str:
    url = reverse("accounts:login")
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


# --- Sign-up ---------------------------------------------------------------------------------


@method_decorator([never_cache, sensitive_post_parameters("password1", "password2")], "dispatch")
class SignUpView(FormView[SignUpForm]):
    template_name = "accounts/signup.html"
    form_class = SignUpForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        next_url = safe_next(self.request, self.request.GET.get("next") or "")
        context["next"] = next_url
        context["login_url"] = login_url_with_next(next_url)
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limit, window = SIGNUP_LIMIT_PER_IP
        if not ratelimit.hit(
            bucket="signup",
            identity=ratelimit.client_ip(request),
            limit=limit,
            window_seconds=window,
        ):
            return render(request, "accounts/rate_limited.html", status=429)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: SignUpForm) -> HttpResponse:
        data = form.cleaned_data
        services.user_sign_up(
            email=data["email"],
            password=data["password1"],
            given_name=data.get("given_name") or "",
            family_name=data.get("family_name") or "",
            time_zone=data.get("time_zone") or "UTC",
        )
        # The same page whether or not the address already had an account.
        self.request.session[_SIGNUP_SESSION_KEY] = {
            "email": data["email"],
            "next": safe_next(self.request, self.request.GET.get("next") or ""),
        }
        return redirect("accounts:signup-done")


@method_decorator(never_cache, "dispatch")
class SignUpDoneView(TemplateView):
    template_name = "accounts/signup_done.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        pending = self.request.session.get(_SIGNUP_SESSION_KEY) or {}
        context["email"] = pending.get("email", "")
        context["login_url"] = login_url_with_next(pending.get("next", ""))
        return context


# --- Login and logout ------------------------------------------------------------------------


class PatientLoginView(auth_views.LoginView):
    """The page /o/authorize/ sends a signed-out user to. django-axes counts the failures."""

    template_name = "accounts/login.html"
    form_class = LoginForm
    # False so that the app's `prompt=login` (DOT sends the user here) really asks again, e.g.
    # to switch accounts, instead of bouncing a signed-in user straight back.
    redirect_authenticated_user = False

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        next_url = self.get_redirect_url()
        signup = reverse("accounts:signup")
        context["signup_url"] = f"{signup}?{urlencode({'next': next_url})}" if next_url else signup
        return context


@method_decorator([never_cache, csrf_protect], "dispatch")
class LogoutView(View):
    """GET asks, POST signs out (a link or a prefetch must never sign anyone out)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(
            request, "accounts/logout.html", {"next": safe_next(request, request.GET.get("next"))}
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        next_url = safe_next(request, request.POST.get("next"))
        logout(request)
        messages.info(request, "You are signed out.")
        if next_url:
            # "Not you?" on the approval page: sign in as someone else and carry on.
            return HttpResponseRedirect(login_url_with_next(next_url))
        return redirect(settings.LOGOUT_REDIRECT_URL)


# --- E-mail verification ---------------------------------------------------------------------


@method_decorator(never_cache, "dispatch")
class VerifyEmailView(View):
    """The link from the e-mail: signed, expiring, single-use."""

    def get(self, request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
        user = services.email_verify(uidb64=uidb64, token=token)
        if user is None:
            return render(request, "accounts/verify_email_invalid.html", status=400)
        return render(request, "accounts/verify_email_done.html")


@method_decorator(never_cache, "dispatch")
class VerifyEmailResendView(LoginRequiredMixin, View):
    def post(self, request: HttpRequest) -> HttpResponse:
        form = ResendVerificationForm(request.POST)
        next_url = safe_next(request, form.data.get("next")) or reverse("accounts:welcome")
        user = request.user
        assert isinstance(user, User)
        limit, window = RESEND_LIMIT_PER_USER
        if user.email_verified:
            messages.info(request, "Your e-mail address is already verified.")
        elif not ratelimit.hit(
            bucket="verify-resend", identity=str(user.pk), limit=limit, window_seconds=window
        ):
            messages.error(request, "We have sent several links already. Try again later.")
        else:
            services.email_verification_send(user=user)
            messages.success(request, "We sent you a new link. It may take a minute to arrive.")
        return HttpResponseRedirect(next_url)


# --- Welcome ---------------------------------------------------------------------------------


@method_decorator(never_cache, "dispatch")
class WelcomeView(LoginRequiredMixin, TemplateView):
    template_name = "accounts/welcome.html"


# --- Password reset (Django's views, our templates, links built on PUBLIC_BASE_URL) ------------


class PasswordResetView(auth_views.PasswordResetView):
    """Django's view; the form queues the e-mail (tasks.send_account_email)."""

    template_name = "accounts/password_reset_form.html"
    form_class = PatientPasswordResetForm
    success_url = reverse_lazy("accounts:password-reset-done")

    def form_valid(self, form: Any) -> HttpResponse:
        ip_limit, ip_window = RESET_LIMIT_PER_IP
        address_limit, address_window = RESET_LIMIT_PER_ADDRESS
        ip_ok = ratelimit.hit(
            bucket="reset-ip",
            identity=ratelimit.client_ip(self.request),
            limit=ip_limit,
            window_seconds=ip_window,
        )
        address_ok = ratelimit.hit(
            bucket="reset-address",
            identity=form.cleaned_data["email"],
            limit=address_limit,
            window_seconds=address_window,
        )
        if not ip_ok:
            return render(self.request, "accounts/rate_limited.html", status=429)
        if not address_ok:
            # Same answer as a sent link: the page never tells whether anything was sent.
            return HttpResponseRedirect(self.get_success_url())
        return super().form_valid(form)


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password-reset-complete")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        services.password_reset_completed(user=form.user)
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


# --- The OAuth approval step -----------------------------------------------------------------


@method_decorator(never_cache, "dispatch")
class PatientAuthorizationView(AuthorizationView):
    """django-oauth-toolkit's /o/authorize/ with this service's rules on top.

    - Only patients can authorize the app; a staff account sees an explanation.
    - The e-mail address must be verified first (the page offers to re-send the link).
    - PKCE must use S256: a `plain` (or method-less, which means plain) challenge is refused
      on the first request, before the approval page is shown. A missing challenge is refused
      by DOT (PKCE_REQUIRED).
    """

    template_name = "oauth2_provider/authorize.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if isinstance(user, User) and user.is_authenticated:
            if not user.is_patient:
                return render(request, "accounts/authorize_not_patient.html", status=403)
            if not user.email_verified:
                context = {
                    "continue_url": request.get_full_path() if request.method == "GET" else "",
                    "email": user.email,
                }
                return render(request, "accounts/authorize_verify_email.html", context, status=403)
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.GET.get("code_challenge") and request.GET.get("code_challenge_method") != "S256":
            try:
                _scopes, credentials = self.validate_authorization_request(request)
            except OAuthToolkitError as error:
                return self.error_response(error, application=None)
            application = get_application_model().objects.get(client_id=credentials["client_id"])
            refusal = OAuthToolkitError(
                error=oauth_errors.InvalidRequestError(
                    description='PKCE code_challenge_method must be "S256".',
                    state=credentials.get("state"),
                ),
                redirect_uri=credentials["redirect_uri"],
            )
            return self.error_response(refusal, application)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["scope_details"] = describe_scopes(context.get("scopes") or [])
        return context

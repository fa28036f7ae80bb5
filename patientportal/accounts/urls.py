"""Sign-up, login (used by the OAuth authorize step), e-mail verification, password reset."""

from django.urls import URLPattern, URLResolver, path

from . import views

app_name = "accounts"
urlpatterns: list[URLPattern | URLResolver] = [
    path("signup/", views.SignUpView.as_view(), name="signup"),
    path("signup/done/", views.SignUpDoneView.as_view(), name="signup-done"),
    path("login/", views.PatientLoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("welcome/", views.WelcomeView.as_view(), name="welcome"),
    path("verify/resend/", views.VerifyEmailResendView.as_view(), name="verify-email-resend"),
    path("verify/<uidb64>/<token>/", views.VerifyEmailView.as_view(), name="verify-email"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password/reset/sent/",
        views.PasswordResetDoneView.as_view(),
        name="password-reset-done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path(
        "password/reset/complete/",
        views.PasswordResetCompleteView.as_view(),
        name="password-reset-complete",
    ),
]

"""Engagement endpoints under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from engagement.api import views

app_name = "engagement"

urlpatterns: list[URLPattern | URLResolver] = [
    path("reminders", views.ReminderListView.as_view(), name="reminder-list"),
    path("reminders/preferences", views.PreferencesView.as_view(), name="reminder-preferences"),
    path("reminders/devices", views.DeviceRegisterView.as_view(), name="device-register"),
    path(
        "reminders/devices/<uuid:device_id>",
        views.DeviceRemoveView.as_view(),
        name="device-remove",
    ),
    path(
        "reminders/<uuid:reminder_id>/open", views.ReminderOpenView.as_view(), name="reminder-open"
    ),
    path(
        "reminders/<uuid:reminder_id>/acknowledge",
        views.ReminderAcknowledgeView.as_view(),
        name="reminder-acknowledge",
    ),
    path(
        "reminders/<uuid:reminder_id>/snooze",
        views.ReminderSnoozeView.as_view(),
        name="reminder-snooze",
    ),
]

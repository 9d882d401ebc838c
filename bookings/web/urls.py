"""Customer web client routes, at the site root (the API is under /api/, the console /admin/)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from bookings.web import views

app_name = "web"
urlpatterns = [
    path("", views.offer_list, name="offers"),
    path("offers/<int:offer_id>/", views.offer_stay, name="offer"),
    path("quotes/<uuid:quote_id>/", views.quote_detail, name="quote"),
    path("quotes/<uuid:quote_id>/book/", views.quote_book, name="quote-book"),
    path("bookings/", views.booking_list, name="bookings"),
    path("bookings/<str:reference>/", views.booking_detail, name="booking"),
    path("bookings/<str:reference>/status/", views.booking_status, name="booking-status"),
    path("bookings/<str:reference>/cancel/", views.booking_cancel, name="booking-cancel"),
    path("account/signup/", views.signup, name="signup"),
    path("account/login/", views.LoginView.as_view(), name="login"),
    path("account/logout/", views.LogoutView.as_view(), name="logout"),
    path("account/password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "account/password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "account/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "account/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]

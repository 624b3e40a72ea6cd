from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from kdevweb.throttle import ThrottledAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico whatever the page's <link> says.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("kdevweb/favicon.svg")), name="favicon"),
    path("login/", auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("guests.urls")),
    path("", include("builds.urls")),
]

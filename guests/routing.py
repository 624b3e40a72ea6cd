from django.urls import path

from .consumers import GuestsConsumer

websocket_urlpatterns = [
    path("ws/labs/<slug:lab_slug>/guests/", GuestsConsumer.as_asgi()),
]

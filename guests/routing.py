from django.urls import path

from .console_consumer import ConsoleConsumer
from .consumers import GuestsConsumer

websocket_urlpatterns = [
    path("ws/labs/<slug:lab_slug>/guests/", GuestsConsumer.as_asgi()),
    path("ws/labs/<slug:lab_slug>/guests/<int:guest_id>/console/<str:console>/", ConsoleConsumer.as_asgi()),
]

"""Django: a view that streams an agent's reply with StreamingHttpResponse.

    pip install django
    python examples/django_view.py        # then open http://127.0.0.1:8000/ask?message=Hi

A whole Django project in one file (settings.configure instead of settings.py),
so that only the view matters: a plain blocking view, no async, no channels. In a
real project, put ``ask`` in your views.py and the URL in your urls.py.

Without VECTORSHIFT_API_KEY this runs against a local engine (see _local.py).
"""

import sys

import django
from _local import local_engine_unless_api_key
from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import path

from vectorshift_sync import Agent, SessionEventType

AGENT_NAME = "Demo Agent"  # the name of a conversational agent in your account

settings.configure(
    DEBUG=True,
    SECRET_KEY="only-for-this-example",
    ROOT_URLCONF=__name__,  # the urlpatterns below
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
)
django.setup()


def ask(request):
    message = request.GET.get("message", "").strip() or "Hello!"
    # Fetched per request to keep the example short; cache it in a real app.
    agent = Agent.fetch(name=AGENT_NAME)

    def reply():
        # One session per request: a session is one conversation, and requests
        # sharing one would read each other's events.
        with agent.create_session() as session:
            for event in session.stream(message, timeout=120):
                if event.type == SessionEventType.MESSAGE_DELTA and event.is_from_agent:
                    yield event.delta
                elif event.type == SessionEventType.APPROVAL_REQUEST:
                    # A plain-text response cannot ask the user, so say no.
                    session.respond(event, approved=False, deny_reason="not from the web")
            # This conversation is over: delete it on the server.
            session.terminate()
        yield "\n"

    # Django sends each chunk as the generator yields it.
    return StreamingHttpResponse(reply(), content_type="text/plain; charset=utf-8")


urlpatterns = [path("ask", ask)]


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    # With no arguments, serve on 127.0.0.1:8000; otherwise run the given
    # command, as manage.py would (e.g. "runserver 127.0.0.1:8001").
    # --noreload: the auto-reloader would run this file again in a child process.
    argv = sys.argv
    if len(argv) == 1:
        argv = [argv[0], "runserver", "--noreload", "127.0.0.1:8000"]
    with local_engine_unless_api_key():
        execute_from_command_line(argv)

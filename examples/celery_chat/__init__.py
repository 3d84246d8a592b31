"""Agent turns in Celery workers, streamed to the browser through Redis (docs/scale-out.rst).

``tasks.py`` is the worker side (one turn per task), ``web.py`` the Flask side (starts
a turn, relays its channel as Server-Sent Events), ``demo.py`` runs both offline.
"""

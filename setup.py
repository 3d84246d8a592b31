"""Packaging for vectorshift_sync: a blocking client for VectorShift sessions."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="vectorshift-sync",
    version="0.1.0",
    description=(
        "Talk to VectorShift conversational Agents and Chatbots from synchronous "
        "Python: the blocking twin of the official Session API."
    ),
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["vectorshift_sync", "vectorshift_sync.*"]),
    package_data={"vectorshift_sync": ["py.typed"]},
    install_requires=[
        # The connection library: handshake, proxies, TLS.
        "websocket-client>=1.6,<2",
        # Sans-I/O frame parser fed by the reader thread's bulk reads; the local
        # engine's threading server. 14.1 is the oldest verified: before it, the
        # threading server drops client messages that arrive just before a close frame.
        # The newest on Python 3.9 is 15.
        "websockets>=14.1,<18",
        "requests>=2.28,<3",
        # JSON decoding of inbound frames, straight from bytes (C). Wheels in range
        # for every Python we support: 0.19 is the first for 3.13, 0.20 the first
        # for 3.14 and the last for 3.9.
        "msgspec>=0.19,<1",
    ],
    extras_require={
        # The local engine (vectorshift_sync.testing) uses websockets' threading
        # server, already a core dependency; the extra exists so that installing
        # it reads as intent and can grow without breaking users.
        "local": [],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "responses>=0.23",
            "hypothesis>=6",
            "trustme>=1.0",  # tests/test_tls.py: a throwaway CA and certificates
            "gevent>=22.10",  # tests/test_green.py: the monkey-patching we claim to support
            # tests/test_green.py: eventlet's monkey_patch(), a documented strict xfail
            # (0.36+ runs on Python 3.12; older Pythons get the newest that supports them).
            "eventlet>=0.36",
            "docutils>=0.18",  # tests/test_readme.py checks README.rst
            # examples/ run by tests/test_examples.py: the web frameworks, and
            # nbclient + ipykernel to execute the notebook headlessly.
            "flask>=2.2",
            "django>=4.2",
            "nbclient>=0.7",
            "nbformat>=5.7",
            "ipykernel>=6",
            # examples/celery_chat, run by tests/test_celery.py against Debian's
            # redis-server (apt-get install redis-server). Celery 5.3 is the first
            # on Python 3.12; redis-py 5 and 6 still install on Python 3.9.
            "celery[redis]>=5.3,<6",
            "redis>=4.5,<7",
            # tests/test_browser.py drives Debian's chromium (apt-get install chromium);
            # never `playwright install`: it downloads a browser of its own.
            "playwright>=1.40",
            # tests/test_chat_hosts.py runs examples/streamlit_chat.py under Streamlit's
            # AppTest and examples/gradio_chat.py as a live Gradio server driven by
            # gradio_client. Gradio 5+ needs Python 3.10, and the last gradio_client for
            # 3.9 (1.3) pins websockets<13, below ours: on 3.9 the Gradio test skips.
            "streamlit>=1.36,<2",
            "gradio>=5.0,<7; python_version >= '3.10'",
            "gradio_client>=1.3,<3; python_version >= '3.10'",
        ],
        "dev": ["mypy>=1.8,<2", "ruff>=0.4", "types-requests"],
    },
    entry_points={
        "console_scripts": ["vectorshift-sync=vectorshift_sync.cli:main"],
        "pytest11": ["vectorshift_sync=vectorshift_sync.testing.pytest_plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Typing :: Typed",
    ],
)

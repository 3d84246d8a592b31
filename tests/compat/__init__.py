"""Compat tests: the official SDK against the local engine (a package, so its conftest
never shadows tests/conftest.py as the module ``conftest``)."""

"""The cffi backend (``PYSTATE_BACKEND=cffi``, and the default on PyPy):
the C core bound through cffi's API mode (``_native``, compiled by the
project's build from ``build.py``), with the JSON codec and the update op
engine in plain Python. See ``pystate._backend``.
"""

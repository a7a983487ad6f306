"""The cffi backend (``PYSTATE_BACKEND=cffi``, and the default on PyPy):
the C core bound through cffi's API mode (``_native``, compiled by the
project's build from ``build.py``). The JSON codec and the update op engine
are the Cython binding's, ``pystate._codec`` and ``pystate._ops``: one
source each, compiled on CPython and plain Python on PyPy. See
``pystate._backend``.
"""

"""The storage adapters, each a module with an ``open_storage(path,
options)`` (see :mod:`pystate.storage`, whose ``ADAPTERS`` names them):

- :mod:`pystate.adapters.kv`: the compiled core, in memory or on file;
- :mod:`pystate.adapters.redis_adapter`: a Redis server or cluster;
- :mod:`pystate.adapters.bridge_adapter`: a remote iii engine or
  ``pystate serve``.

``pystate.State(adapter=...)`` opens one by name.
"""

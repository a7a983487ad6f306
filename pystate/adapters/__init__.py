"""Storage adapters other than the compiled kv store.

``pystate.State(adapter="redis", redis_url=...)`` gives a
:class:`~pystate.adapters.redis_adapter.RedisState`: the same surface
(functions, triggers, ``trigger``), with its values in a Redis server.
"""

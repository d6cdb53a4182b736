"""Ports: what use cases need from the outside world, declared by their consumer, one module
per capability (nothing is re-exported here: import from the capability's module).

- ``common``: the clock, ``Transaction`` and ``UnitOfWorkFactory[U]``;
- ``setup``, ``access``, ``keys``, ``reports``, ``fetching``, ``status``: each capability's
  repositories and services, and its unit of work (``SetupUnitOfWork``, ...) carrying only the
  repositories its use cases touch;
- ``processing``: the worker's queue, geocoder and ``ProcessingUnitOfWork``;
- ``health``: ``DependencyProbe``.

Implementations live in ``adapters`` (``Postgres*``, ``Redis*``); in-memory fakes in
``tests/unit/fakes``. ``tests/contract`` holds one suite per port, run over both.
"""

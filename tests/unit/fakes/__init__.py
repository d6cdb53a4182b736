"""In-memory fakes of the ports in ``domain.ports``, for unit tests, one module per
capability (``setup``, ``access``, ``keys``, ``reports``, ``fetching``, ``processing``; the
shared store and clock in ``base``, the unit of work in ``common``). Nothing is re-exported
here. ``tests/contract`` runs each port's suite over these fakes and the real adapters.

The repositories behave like the PostgreSQL adapter (``adapters.postgres``): foreign keys
(NotFound "parent of ..."), unique constraints checked in index order (id, mac_address,
advertisement_key; users: email), delete with or without cascade (memberships and refresh tokens
always cascade), keyset pages ordered by id, and every list narrowed to the filter's
``visible_clients``. A unit of work works on a private copy of the committed state and
publishes it only on ``commit``.

The password hasher and the token codec are deterministic stand-ins (not argon2, not JWT) with
the same contracts: ``verify`` is true only for the hashed password, ``decode`` raises
Unauthenticated for any unknown, tampered or expired token.

Tag keys (``adapters.postgres.keys``): key batches and their keys numbered by ``seq``, unique MAC
address and advertisement key, allocation to a client (a client with allocated tags is deleted
only with cascade, which returns its tags to the unallocated pool). The key-pair factory and
the sealer are deterministic stand-ins for findmy and AES-GCM with the same contracts:
``public_of`` of a generated private key is its advertisement key, and a sealed secret opens only
with the context it was sealed with.

Reports (``adapters.postgres.reports``): stored idempotently by ``Report.identity`` (tracker,
time, position in 1e-7 degrees; like ``ON CONFLICT DO NOTHING`` the first one stored wins, also
within one call); ``add_many`` returns how many were new. No foreign key to trackers, as in the
partitioned table.
"""

"""PostgreSQL/PostGIS adapters: migrations, pool, unit of work, repositories."""

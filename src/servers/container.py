"""The dependency-injector container shared by every process's composition root."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.grpc.health import HealthReporter
from adapters.grpc.setup import SetupQueryServicer, SetupServicer
from adapters.postgres.pool import PostgresProbe, pool_resource
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from adapters.redis.client import RedisProbe, redis_resource
from servers.config import Settings
from usecases.health import CheckDependencies
from usecases.setup import SetupUseCases

SETUP_SERVICE = "tracker.v1.SetupService"
SETUP_QUERY_SERVICE = "tracker.v1.SetupQueryService"

# Which dependencies each gRPC service needs to be SERVING.
SERVICE_DEPENDENCIES = {
    SETUP_SERVICE: ("postgres",),
    SETUP_QUERY_SERVICE: ("postgres",),
}


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    db_pool = providers.Resource(
        pool_resource, dsn=settings.provided.database_url, max_size=settings.provided.db_pool_max
    )
    redis = providers.Resource(redis_resource, url=settings.provided.redis_url)

    clock = providers.Singleton(SystemClock)
    uow_factory = providers.Singleton(PostgresUnitOfWorkFactory, pool=db_pool)
    setup_usecases = providers.Singleton(SetupUseCases.build, uow=uow_factory, clock=clock)

    check_dependencies = providers.Singleton(
        CheckDependencies,
        probes=providers.List(
            providers.Singleton(PostgresProbe, db_pool),
            providers.Singleton(RedisProbe, redis),
        ),
        timeout_s=settings.provided.health_check_timeout_s,
    )
    health_reporter = providers.Singleton(
        HealthReporter,
        check=check_dependencies,
        services=SERVICE_DEPENDENCIES,
        interval_s=settings.provided.health_check_interval_s,
    )

    setup_servicer = providers.Singleton(SetupServicer, setup_usecases)
    setup_query_servicer = providers.Singleton(SetupQueryServicer, setup_usecases)

"""The dependency-injector container shared by every process's composition root."""

from __future__ import annotations

from datetime import timedelta

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.grpc.auth import AuthInterceptor, AuthServicer, UserQueryServicer, UserServicer
from adapters.grpc.decoding import UndecodableRequestInterceptor
from adapters.grpc.errors import DomainErrorInterceptor
from adapters.grpc.fetching import FetchQueryServicer
from adapters.grpc.keys import KeyQueryServicer, KeyServicer
from adapters.grpc.processing import ProcessingQueryServicer, ProcessingServicer
from adapters.grpc.reports import ReportServicer
from adapters.grpc.setup import SetupQueryServicer, SetupServicer
from adapters.grpc.status import StatusQueryServicer, StatusServicer
from adapters.keys import AesGcmSealer, FindMyKeyPairFactory
from adapters.postgres.geocoding import PostgresGeocoder
from adapters.postgres.partitions import PostgresReportPartitions
from adapters.postgres.pool import PostgresProbe, pool_resource
from adapters.postgres.processing import (
    PostgresProcessingQueue,
    PostgresProcessingUnitOfWorkFactory,
)
from adapters.postgres.status import PostgresStatusRepository
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from adapters.prometheus import PrometheusFetchMetrics
from adapters.redis.client import RedisProbe, redis_resource
from adapters.redis.queue import RedisAccountGate, RedisFetchQueue
from adapters.redis.throttle import RedisAttemptThrottle
from adapters.security import Argon2PasswordHasher, JwtTokenCodec
from adapters.throttle import FailoverAttemptThrottle, MemoryAttemptThrottle
from domain.pagination import PageTokens
from domain.processing import RetryPolicy
from servers.config import Settings, kek_ring, page_token_keys, signing_key
from servers.parts import AccessPart, KeysPart, SetupPart
from usecases.access import TokenPolicy
from usecases.fetch_once import FetchRunReports
from usecases.fetching import FetchStateQueries, FetchWorker
from usecases.maintenance import MaintainReportPartitions
from usecases.processing import ProcessingQueries, ProcessNewReports
from usecases.reports import IngestReports, TrackerRefCache
from usecases.status import StatusQueries, StatusRuleUpdates


def _sealer(settings: Settings) -> AesGcmSealer:
    ring, active = kek_ring(settings.security)
    return AesGcmSealer(ring, active)


def _page_tokens(settings: Settings) -> PageTokens:
    keys, active = page_token_keys(settings.security)
    return PageTokens(keys, active)


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    db_pool = providers.Resource(
        pool_resource,
        dsn=settings.provided.database.dsn,
        max_size=settings.provided.database.pool_max,
    )
    redis = providers.Resource(
        redis_resource, url=settings.provided.redis.url.get_secret_value.call()
    )

    clock = providers.Singleton(SystemClock)
    uow_factory = providers.Singleton(PostgresUnitOfWorkFactory, pool=db_pool)
    setup = providers.Container(SetupPart, uow=uow_factory, clock=clock)
    setup_usecases = setup.usecases

    # Health probes; each process checks only the dependencies it needs (servers/runtime.py).
    postgres_probe = providers.Singleton(PostgresProbe, db_pool)
    redis_probe = providers.Singleton(RedisProbe, redis)

    password_hasher = providers.Singleton(
        Argon2PasswordHasher,
        concurrency=settings.provided.security.password_hash_concurrency,
        queue=settings.provided.security.password_hash_queue,
    )
    # Sign-in attempts counted in Redis across replicas; in this process while Redis is down.
    login_throttle = providers.Singleton(
        FailoverAttemptThrottle,
        primary=providers.Singleton(
            RedisAttemptThrottle, redis, prefix=settings.provided.login.throttle_prefix
        ),
        fallback=providers.Singleton(MemoryAttemptThrottle, clock),
        clock=clock,
    )
    token_codec = providers.Singleton(
        JwtTokenCodec, signing_key=providers.Callable(signing_key, settings.provided.security)
    )
    token_policy = providers.Singleton(
        TokenPolicy,
        access_ttl=settings.provided.security.access_token_ttl,
        refresh_ttl=settings.provided.security.refresh_token_ttl,
    )
    access = providers.Container(
        AccessPart,
        uow=uow_factory,
        hasher=password_hasher,
        codec=token_codec,
        clock=clock,
        policy=token_policy,
        auth_cache_ttl=settings.provided.security.auth_cache_ttl,
        throttle=login_throttle,
        login_limits=settings.provided.login.limits.call(),
    )
    access_usecases = access.usecases

    key_pair_factory = providers.Singleton(FindMyKeyPairFactory)
    sealer = providers.Singleton(_sealer, settings)
    keys = providers.Container(
        KeysPart, uow=uow_factory, factory=key_pair_factory, sealer=sealer, clock=clock
    )
    key_usecases = keys.usecases

    undecodable_interceptor = providers.Singleton(UndecodableRequestInterceptor)
    interceptors = providers.List(
        providers.Singleton(DomainErrorInterceptor),
        providers.Singleton(AuthInterceptor, authenticate=access_usecases.provided.authenticate),
        # last, so it wraps the servicers themselves: bad bytes -> INVALID_ARGUMENT everywhere
        undecodable_interceptor,
    )

    page_tokens = providers.Singleton(_page_tokens, settings)
    setup_servicer = providers.Singleton(SetupServicer, setup_usecases)
    setup_query_servicer = providers.Singleton(SetupQueryServicer, setup_usecases, page_tokens)
    auth_servicer = providers.Singleton(
        AuthServicer,
        access_usecases,
        address_header=settings.provided.login.address_header,
        trusted_proxies=settings.provided.login.trusted_proxies,
    )
    user_servicer = providers.Singleton(UserServicer, access_usecases)
    user_query_servicer = providers.Singleton(UserQueryServicer, access_usecases, page_tokens)
    key_servicer = providers.Singleton(KeyServicer, key_usecases)
    key_query_servicer = providers.Singleton(KeyQueryServicer, key_usecases)
    tracker_ref_cache = providers.Singleton(
        TrackerRefCache,
        clock=clock,
        ttl=settings.provided.collector.tracker_cache_ttl,
    )
    ingest_reports = providers.Singleton(
        IngestReports,
        uow=uow_factory,
        clock=clock,
        cache=tracker_ref_cache,
        max_clock_skew=settings.provided.collector.max_clock_skew,
    )
    report_partitions = providers.Singleton(PostgresReportPartitions, db_pool)
    maintain_report_partitions = providers.Singleton(
        MaintainReportPartitions,
        partitions=report_partitions,
        clock=clock,
        back_months=settings.provided.collector.partitions_back_months,
        ahead_months=settings.provided.collector.partitions_ahead_months,
    )
    report_servicer = providers.Singleton(ReportServicer, ingest_reports)

    # -- the fetcher's queue (Redis) and its admin view
    fetch_queue = providers.Singleton(
        RedisFetchQueue,
        redis,
        prefix=settings.provided.fetch_queue.prefix,
        worker_ttl=settings.provided.fetch_queue.worker_ttl,
    )
    account_gate = providers.Singleton(
        RedisAccountGate, redis, prefix=settings.provided.fetch_queue.prefix
    )
    fetch_metrics = providers.Singleton(PrometheusFetchMetrics)
    # The fetcher's work over its accounts and rules (given by the fetcher root or trackerctl).
    fetch_worker = providers.Factory(
        FetchWorker,
        uow=uow_factory,
        queue=fetch_queue,
        gate=account_gate,
        clock=clock,
        metrics=fetch_metrics,
    )
    fetch_run_reports = providers.Factory(
        FetchRunReports, uow=uow_factory, queue=fetch_queue, gate=account_gate, clock=clock
    )
    fetch_state_queries = providers.Singleton(
        FetchStateQueries, uow=uow_factory, queue=fetch_queue, clock=clock
    )
    fetch_query_servicer = providers.Singleton(FetchQueryServicer, fetch_state_queries)
    # --- processing: geocoding, roll-ups, status (issue 6) ---
    processing_queue = providers.Singleton(PostgresProcessingQueue, db_pool)
    processing_uow = providers.Singleton(PostgresProcessingUnitOfWorkFactory, db_pool)
    geocoder = providers.Singleton(
        PostgresGeocoder,
        db_pool,
        cache_size=settings.provided.geocoding.cache_size,
        cell_deg=settings.provided.geocoding.cell_deg,
    )
    process_new_reports = providers.Singleton(
        ProcessNewReports,
        queue=processing_queue,
        uow=processing_uow,
        geocoder=geocoder,
        batch_size=settings.provided.worker.batch_size,
        lease_s=providers.Callable(_seconds, settings.provided.worker.lease),
        retry=providers.Factory(
            RetryPolicy,
            base_s=providers.Callable(_seconds, settings.provided.worker.retry_base),
            max_s=providers.Callable(_seconds, settings.provided.worker.retry_max),
        ),
    )
    processing_queries = providers.Singleton(ProcessingQueries, queue=processing_queue)
    processing_query_servicer = providers.Singleton(
        ProcessingQueryServicer, processing_queries, page_tokens
    )
    processing_servicer = providers.Singleton(ProcessingServicer, processing_queries)
    status_repository = providers.Singleton(
        PostgresStatusRepository,
        db_pool,
        hourly_days=settings.provided.status.hourly_days,
    )
    status_queries = providers.Singleton(StatusQueries, repo=status_repository, uow=uow_factory)
    status_query_servicer = providers.Singleton(StatusQueryServicer, status_queries, page_tokens)
    status_rule_updates = providers.Singleton(
        StatusRuleUpdates, repo=status_repository, uow=uow_factory
    )
    status_servicer = providers.Singleton(StatusServicer, status_rule_updates)

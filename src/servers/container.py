"""The dependency-injector containers of the composition roots, one per process, each
composed from the parts it serves (declarative containers inherit each other's providers;
a provider shared by two parts is one provider, so the all-in-one ``Container`` holds each
singleton once):

    Core ........................ settings, clock, PostgreSQL, Redis, probes (every process)
      Sealing ................... the KEK ring sealing private keys
      FetchQueueing ............. the fetch queue and account gate (Redis)
      ProcessingQueueing ........ the processing queue (PostgreSQL)
        Api ..................... sign-in, tokens, interceptors, page tokens, the use cases
                                  both gRPC endpoints share (setup, access, keys, ...)
    HealthContainer ............. Core                       (tracker-health)
    CollectorContainer .......... Api + mutations            (tracker-collector)
    QueryContainer .............. Api + FetchQueueing + reads (tracker-query)
    FetcherContainer ............ Sealing + FetchQueueing + the fetch worker (tracker-fetcher)
    WorkerContainer ............. ProcessingQueueing + geocoder + ProcessNewReports
    Container ................... all of them (tracker-server, trackerctl, tests)

Use cases of one capability are wired in ``servers/parts.py``; a process starts and probes
only the dependencies of what it serves (``servers/runtime.py``). Tests replace a provider
with ``container.<name>.override(...)``."""

from __future__ import annotations

from datetime import timedelta

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.grpc.auth import AuthInterceptor, AuthServicer, UserQueryServicer, UserServicer
from adapters.grpc.decoding import UndecodableRequestInterceptor
from adapters.grpc.detectors import DetectorQueryServicer, DetectorServicer
from adapters.grpc.devices import DeviceQueryServicer, DeviceServicer
from adapters.grpc.errors import DomainErrorInterceptor
from adapters.grpc.events import EventQueryServicer, WebhookServicer
from adapters.grpc.exports import ExportQueryServicer
from adapters.grpc.fetching import FetchQueryServicer
from adapters.grpc.fleet import FleetQueryServicer
from adapters.grpc.idempotency import IdempotencyInterceptor
from adapters.grpc.jobs import JobQueryServicer, JobServicer
from adapters.grpc.keys import KeyQueryServicer, KeyServicer
from adapters.grpc.processing import ProcessingQueryServicer, ProcessingServicer
from adapters.grpc.reports import ReportServicer
from adapters.grpc.setup import SetupQueryServicer, SetupServicer
from adapters.grpc.status import StatusQueryServicer, StatusServicer
from adapters.grpc.telemetry import AccessLogInterceptor, RpcMetricsInterceptor
from adapters.keys import AesGcmSealer, FindMyKeyPairFactory
from adapters.postgres.detectors import PostgresFeed
from adapters.postgres.events import PostgresEventFeed, PostgresWebhookRepository
from adapters.postgres.exports import PostgresExportSource
from adapters.postgres.fleet import PostgresFleetStatistics
from adapters.postgres.geocoding import PostgresGeocoder
from adapters.postgres.idempotency import PostgresIdempotencyStore
from adapters.postgres.outages import PostgresOutageRepository
from adapters.postgres.partitions import PostgresReportPartitions
from adapters.postgres.pool import PostgresProbe, pool_resource, read_pool_resource
from adapters.postgres.processing import (
    PostgresProcessingQueue,
    PostgresProcessingUnitOfWorkFactory,
)
from adapters.postgres.retention import PostgresRetention
from adapters.postgres.silence import PostgresCadenceRepository
from adapters.postgres.status import PostgresStatusRepository
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from adapters.prometheus import PrometheusFetchMetrics, PrometheusWorkerMetrics, RpcMetrics
from adapters.redis.client import RedisProbe, redis_resource
from adapters.redis.queue import RedisAccountGate, RedisFetchQueue
from adapters.redis.throttle import RedisAttemptThrottle
from adapters.security import Argon2PasswordHasher, JwtTokenCodec
from adapters.throttle import FailoverAttemptThrottle, MemoryAttemptThrottle
from adapters.tracing import OpenTelemetryTracer
from adapters.webhooks import AiohttpWebhookSender
from domain.detectors import DeviceKeyRing
from domain.pagination import PageTokens
from domain.processing import RetryPolicy
from domain.travel_times import PassRules
from servers.config import Settings, device_keys, kek_ring, page_token_keys, signing_key
from servers.fetcher_runtime import FetcherRuntime
from servers.parts import AccessPart, DetectorsPart, DevicesPart, JobsPart, KeysPart, SetupPart
from servers.retrying import jittered_pause
from usecases.access import TokenPolicy
from usecases.events import DeliverWebhooks, EventQueries, WebhookAdmin
from usecases.exports import HistoryExports
from usecases.fetch_once import FetchRunReports
from usecases.fetching import FetchStateQueries, FetchWorker
from usecases.idempotency import IdempotentCreates
from usecases.jobs import RunJobBatch
from usecases.maintenance import MaintainReportPartitions, PruneExpired
from usecases.outages import DetectOutages, OutageQueries
from usecases.processing import ProcessingQueries, ProcessNewReports
from usecases.reports import IngestReports, TrackerRefCache
from usecases.silence import FleetStatisticsQuery, LearnCadences, SilenceQueries
from usecases.status import StatusQueries, StatusRuleUpdates
from usecases.travel_times import TravelTimeSettings


def _sealer(settings: Settings) -> AesGcmSealer:
    ring, active = kek_ring(settings.security)
    return AesGcmSealer(ring, active)


def _page_tokens(settings: Settings) -> PageTokens:
    keys, active = page_token_keys(settings.security)
    return PageTokens(keys, active)


def _device_keys(settings: Settings) -> DeviceKeyRing:
    keys, active = device_keys(settings.detectors, settings.security)
    return DeviceKeyRing(keys, active)


def _travel_time_settings(settings: Settings) -> TravelTimeSettings:
    d = settings.detectors
    return TravelTimeSettings(
        rules=PassRules(pass_gap_s=d.pass_gap.total_seconds(), bin_s=d.bin_s, k=d.outlier_k),
        lease_s=d.lease.total_seconds(),
        interval_s=d.interval.total_seconds(),
        redo_s=d.redo.total_seconds(),
    )


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


class Core(containers.DeclarativeContainer):
    """What every process has: its settings, a clock, and the dependencies it may start."""

    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)

    db_pool = providers.Resource(
        pool_resource,
        dsn=settings.provided.database.dsn,
        max_size=settings.provided.database.pool_max,
    )
    redis = providers.Resource(
        redis_resource, url=settings.provided.redis.url.get_secret_value.call()
    )
    # Health probes; each process checks only the dependencies it needs (servers/runtime.py).
    postgres_probe = providers.Singleton(PostgresProbe, db_pool)
    redis_probe = providers.Singleton(RedisProbe, redis)

    uow_factory = providers.Singleton(PostgresUnitOfWorkFactory, pool=db_pool)
    # bad bytes -> INVALID_ARGUMENT on every endpoint, the health-only ones too
    undecodable_interceptor = providers.Singleton(UndecodableRequestInterceptor)


class Sealing(Core):
    """The KEK ring sealing (and unsealing) private keys."""

    key_pair_factory = providers.Singleton(FindMyKeyPairFactory)
    sealer = providers.Singleton(_sealer, Core.settings)


class FetchQueueing(Core):
    """The fetcher's queue and account gate in Redis."""

    fetch_queue = providers.Singleton(
        RedisFetchQueue,
        Core.redis,
        prefix=Core.settings.provided.fetch_queue.prefix,
        worker_ttl=Core.settings.provided.fetch_queue.worker_ttl,
    )
    account_gate = providers.Singleton(
        RedisAccountGate, Core.redis, prefix=Core.settings.provided.fetch_queue.prefix
    )


class ProcessingQueueing(Core):
    """The processing queue in PostgreSQL (the worker takes from it, the API reports it)."""

    processing_queue = providers.Singleton(PostgresProcessingQueue, Core.db_pool)


class Detecting(Core):
    """Detectors, sightings and travel times (issue 16): what the collector, the query
    server and the worker share."""

    detector_feed = providers.Singleton(PostgresFeed, Core.db_pool)
    detectors = providers.Container(
        DetectorsPart,
        uow=Core.uow_factory,
        clock=Core.clock,
        keys=providers.Singleton(_device_keys, Core.settings),
        feed=detector_feed,
        live_uow=Core.uow_factory,
        max_clock_skew=Core.settings.provided.collector.max_clock_skew,
    )


class Jobbing(Sealing):
    """Bulk jobs (issue 17): started by the collector, read by the query server."""

    jobs = providers.Container(
        JobsPart,
        uow=Core.uow_factory,
        factory=Sealing.key_pair_factory,
        sealer=Sealing.sealer,
        clock=Core.clock,
        defaults=Core.settings.provided.jobs.defaults.call(),
    )
    job_usecases = jobs.usecases


class Silencing(Core):
    """Silent trackers (issue 17): cadences learned by the worker, read by the query server."""

    silence_rule = Core.settings.provided.silence.rule.call()
    cadence_repository = providers.Singleton(PostgresCadenceRepository, Core.db_pool)


class Outaging(Core):
    """Outages (issue 17): detected by the worker, read by the query server."""

    outage_repository = providers.Singleton(PostgresOutageRepository, Core.db_pool)


class Eventing(Sealing):
    """Changes pushed (issue 17): events and webhooks (CRUD on the collector, streams and
    reads on the query server, deliveries by the worker)."""

    event_feed = providers.Singleton(PostgresEventFeed, Core.db_pool)
    webhook_repository = providers.Singleton(PostgresWebhookRepository, Core.db_pool)
    webhook_admin = providers.Singleton(
        WebhookAdmin, repo=webhook_repository, sealer=Sealing.sealer, clock=Core.clock
    )


class Devicing(Sealing):
    """Devices and firmware (issue 18): changed and checked in on the collector, read on the
    query server."""

    devices = providers.Container(
        DevicesPart, uow=Core.uow_factory, sealer=Sealing.sealer, clock=Core.clock
    )


class Api(Sealing, ProcessingQueueing):
    """What both gRPC endpoints share: sign-in and tokens, the interceptors, page tokens and
    the use cases their services call."""

    password_hasher = providers.Singleton(
        Argon2PasswordHasher,
        concurrency=Core.settings.provided.security.password_hash_concurrency,
        queue=Core.settings.provided.security.password_hash_queue,
    )
    # Sign-in attempts counted in Redis across replicas; in this process while Redis is down.
    login_throttle = providers.Singleton(
        FailoverAttemptThrottle,
        primary=providers.Singleton(
            RedisAttemptThrottle, Core.redis, prefix=Core.settings.provided.login.throttle_prefix
        ),
        fallback=providers.Singleton(MemoryAttemptThrottle, Core.clock),
        clock=Core.clock,
    )
    token_codec = providers.Singleton(
        JwtTokenCodec,
        signing_key=providers.Callable(signing_key, Core.settings.provided.security),
        clock=Core.clock,
    )
    token_policy = providers.Singleton(
        TokenPolicy,
        access_ttl=Core.settings.provided.security.access_token_ttl,
        refresh_ttl=Core.settings.provided.security.refresh_token_ttl,
    )
    access = providers.Container(
        AccessPart,
        uow=Core.uow_factory,
        hasher=password_hasher,
        codec=token_codec,
        clock=Core.clock,
        policy=token_policy,
        auth_cache_ttl=Core.settings.provided.security.auth_cache_ttl,
        throttle=login_throttle,
        login_limits=Core.settings.provided.login.limits.call(),
    )
    access_usecases = access.usecases

    # creates with a request_id run once (issue 15): a store in PostgreSQL, keyed by caller
    idempotency_store = providers.Singleton(PostgresIdempotencyStore, Core.db_pool)
    idempotent_creates = providers.Singleton(
        IdempotentCreates, store=idempotency_store, clock=Core.clock
    )
    interceptors = providers.List(
        # outermost first: metrics and the access line see the final status of every call
        providers.Singleton(RpcMetricsInterceptor, providers.Singleton(RpcMetrics)),
        providers.Singleton(
            AccessLogInterceptor, sample=Core.settings.provided.telemetry.access_log_sample
        ),
        providers.Singleton(DomainErrorInterceptor),
        providers.Singleton(AuthInterceptor, authenticate=access_usecases.provided.authenticate),
        # after authentication: a request_id's scope is the caller
        providers.Singleton(IdempotencyInterceptor, idempotent_creates),
        # last, so it wraps the servicers themselves: bad bytes -> INVALID_ARGUMENT everywhere
        Core.undecodable_interceptor,
    )
    page_tokens = providers.Singleton(_page_tokens, Core.settings)

    setup = providers.Container(SetupPart, uow=Core.uow_factory, clock=Core.clock)
    setup_usecases = setup.usecases
    keys = providers.Container(
        KeysPart,
        uow=Core.uow_factory,
        factory=Sealing.key_pair_factory,
        sealer=Sealing.sealer,
        clock=Core.clock,
    )
    key_usecases = keys.usecases
    processing_queries = providers.Singleton(
        ProcessingQueries, queue=ProcessingQueueing.processing_queue
    )
    status_repository = providers.Singleton(
        PostgresStatusRepository,
        Core.db_pool,
        hourly_days=Core.settings.provided.status.hourly_days,
    )


class HealthContainer(Core):
    """``tracker-health``: probes only."""


class CollectorContainer(Jobbing, Devicing, Eventing, Api, Detecting):
    """``tracker-collector``: every mutation, and the report partitions made ahead."""

    setup_servicer = providers.Singleton(SetupServicer, Api.setup_usecases)
    auth_servicer = providers.Singleton(
        AuthServicer,
        Api.access_usecases,
        address_header=Core.settings.provided.login.address_header,
        trusted_proxies=Core.settings.provided.login.trusted_proxies,
    )
    user_servicer = providers.Singleton(UserServicer, Api.access_usecases)
    key_servicer = providers.Singleton(KeyServicer, Api.key_usecases)
    tracker_ref_cache = providers.Singleton(
        TrackerRefCache, clock=Core.clock, ttl=Core.settings.provided.collector.tracker_cache_ttl
    )
    ingest_reports = providers.Singleton(
        IngestReports,
        uow=Core.uow_factory,
        clock=Core.clock,
        cache=tracker_ref_cache,
        max_clock_skew=Core.settings.provided.collector.max_clock_skew,
    )
    report_servicer = providers.Singleton(ReportServicer, ingest_reports)
    report_partitions = providers.Singleton(PostgresReportPartitions, Core.db_pool)
    maintain_report_partitions = providers.Singleton(
        MaintainReportPartitions,
        partitions=report_partitions,
        clock=Core.clock,
        back_months=Core.settings.provided.collector.partitions_back_months,
        ahead_months=Core.settings.provided.collector.partitions_ahead_months,
    )
    retention_store = providers.Singleton(PostgresRetention, Core.db_pool)
    prune_expired = providers.Singleton(
        PruneExpired,
        store=retention_store,
        clock=Core.clock,
        policy=Core.settings.provided.collector.retention_policy.call(),
        chunk=Core.settings.provided.collector.retention_chunk,
    )
    processing_servicer = providers.Singleton(ProcessingServicer, Api.processing_queries)
    status_rule_updates = providers.Singleton(
        StatusRuleUpdates, repo=Api.status_repository, uow=Core.uow_factory
    )
    status_servicer = providers.Singleton(StatusServicer, status_rule_updates)
    detector_servicer = providers.Singleton(
        DetectorServicer, Detecting.detectors.admin, Detecting.detectors.ingest
    )
    job_servicer = providers.Singleton(JobServicer, Jobbing.job_usecases)
    webhook_servicer = providers.Singleton(WebhookServicer, Eventing.webhook_admin)
    device_servicer = providers.Singleton(
        DeviceServicer,
        Devicing.devices.catalog,
        Devicing.devices.profiles,
        Devicing.devices.devices,
        Devicing.devices.rollouts,
    )


class QueryContainer(
    Jobbing, Devicing, Silencing, Outaging, Eventing, Api, FetchQueueing, Detecting
):
    """``tracker-query``: every read."""

    # What the query server reads through: a replica when TRACKER_DATABASE_READ_URL is set
    # (docs/deploy.md: replica lag), else the primary pool itself. Writes never go through it.
    read_pool = providers.Resource(
        read_pool_resource,
        dsn=Core.settings.provided.database.read_url.get_secret_value.call(),
        primary=Core.db_pool,
        max_size=Core.settings.provided.database.pool_max,
        max_lag_s=providers.Callable(_seconds, Core.settings.provided.database.read_max_lag),
        fallback=providers.Callable(
            lambda mode: mode == "primary", Core.settings.provided.database.read_fallback
        ),
    )
    read_uow_factory = providers.Singleton(PostgresUnitOfWorkFactory, pool=read_pool)
    setup_reads = providers.Container(SetupPart, uow=read_uow_factory, clock=Core.clock)
    # the user reads (authentication itself stays on the primary: a token revoked or a user
    # deleted there takes effect at once)
    access_reads = providers.Container(
        AccessPart,
        uow=read_uow_factory,
        hasher=Api.password_hasher,
        codec=Api.token_codec,
        clock=Core.clock,
        policy=Api.token_policy,
    )
    keys_reads = providers.Container(
        KeysPart,
        uow=read_uow_factory,
        factory=Sealing.key_pair_factory,
        sealer=Sealing.sealer,
        clock=Core.clock,
    )

    setup_query_servicer = providers.Singleton(
        SetupQueryServicer, setup_reads.usecases, Api.page_tokens
    )
    user_query_servicer = providers.Singleton(
        UserQueryServicer, access_reads.usecases, Api.page_tokens
    )
    key_query_servicer = providers.Singleton(KeyQueryServicer, keys_reads.usecases)
    fetch_state_queries = providers.Singleton(
        FetchStateQueries, uow=read_uow_factory, queue=FetchQueueing.fetch_queue, clock=Core.clock
    )
    fetch_query_servicer = providers.Singleton(FetchQueryServicer, fetch_state_queries)
    processing_query_servicer = providers.Singleton(
        ProcessingQueryServicer,
        providers.Singleton(
            ProcessingQueries, queue=providers.Singleton(PostgresProcessingQueue, read_pool)
        ),
        Api.page_tokens,
    )
    status_queries = providers.Singleton(
        StatusQueries,
        repo=providers.Singleton(
            PostgresStatusRepository,
            read_pool,
            hourly_days=Core.settings.provided.status.hourly_days,
        ),
        uow=read_uow_factory,
    )
    status_query_servicer = providers.Singleton(
        StatusQueryServicer, status_queries, Api.page_tokens
    )
    # detectors, links, events by time range and travel times through the read pool; the
    # streams' positions come from the primary's feed (Detecting.detector_feed), and a
    # travel-time stream's starting picture with them (live_uow)
    detector_reads = providers.Container(
        DetectorsPart,
        uow=read_uow_factory,
        clock=Core.clock,
        keys=providers.Singleton(_device_keys, Core.settings),
        feed=Detecting.detector_feed,
        live_uow=Core.uow_factory,
    )
    detector_query_servicer = providers.Singleton(
        DetectorQueryServicer,
        detector_reads.queries,
        detector_reads.events,
        detector_reads.travel_times,
        Api.page_tokens,
        poll_s=providers.Callable(_seconds, Core.settings.provided.detectors.stream_poll),
    )
    # jobs, their failures and WatchJob's polls through the read pool (a replica replays in
    # commit order: the progress a watch sees only moves forward)
    job_reads = providers.Container(
        JobsPart,
        uow=read_uow_factory,
        factory=Sealing.key_pair_factory,
        sealer=Sealing.sealer,
        clock=Core.clock,
        defaults=Core.settings.provided.jobs.defaults.call(),
    )
    job_query_servicer = providers.Singleton(
        JobQueryServicer,
        job_reads.usecases,
        Api.page_tokens,
        watch_interval_s=providers.Callable(_seconds, Core.settings.provided.jobs.watch_interval),
    )
    # silence, outages, fleet statistics and devices are read through the read pool too
    silence_queries = providers.Singleton(
        SilenceQueries,
        repo=providers.Singleton(PostgresCadenceRepository, read_pool),
        clock=Core.clock,
        rule=Silencing.silence_rule,
    )
    outage_queries = providers.Singleton(
        OutageQueries, repo=providers.Singleton(PostgresOutageRepository, read_pool)
    )
    fleet_statistics = providers.Singleton(
        FleetStatisticsQuery,
        stats=providers.Singleton(PostgresFleetStatistics, read_pool),
        clock=Core.clock,
    )
    devices_reads = providers.Container(
        DevicesPart, uow=read_uow_factory, sealer=Sealing.sealer, clock=Core.clock
    )
    device_query_servicer = providers.Singleton(
        DeviceQueryServicer, devices_reads.queries, Api.page_tokens
    )
    fleet_query_servicer = providers.Singleton(
        FleetQueryServicer,
        silence_queries,
        outage_queries,
        fleet_statistics,
        Api.page_tokens,
        Core.clock,
    )
    event_queries = providers.Singleton(EventQueries, Eventing.event_feed)
    event_query_servicer = providers.Singleton(
        EventQueryServicer,
        event_queries,
        Eventing.webhook_admin,
        Api.page_tokens,
        poll_s=providers.Callable(_seconds, Core.settings.provided.events.stream_poll),
        heartbeat_s=providers.Callable(_seconds, Core.settings.provided.events.stream_heartbeat),
    )
    # history exports (issue 17), read through the replica like every read here; also what
    # trackerctl export and track-svg use
    export_source = providers.Singleton(PostgresExportSource, read_pool)
    history_exports = providers.Singleton(HistoryExports, export_source)
    export_query_servicer = providers.Singleton(ExportQueryServicer, history_exports)


class FetcherContainer(Sealing, FetchQueueing):
    """``tracker-fetcher``: the fetch worker over the accounts and rules its root gives."""

    fetch_metrics = providers.Singleton(PrometheusFetchMetrics, Core.clock)
    fetch_worker = providers.Factory(
        FetchWorker,
        uow=Core.uow_factory,
        queue=FetchQueueing.fetch_queue,
        gate=FetchQueueing.account_gate,
        clock=Core.clock,
        metrics=fetch_metrics,
        tracer=providers.Singleton(OpenTelemetryTracer, "tracker.fetcher"),
        # outages waited out on tenacity's jittered exponential schedule (servers/retrying.py)
        pause=providers.Callable(jittered_pause, max_s=30.0),
    )
    # its loops (per account, heartbeat, queue rebuilds) around a fetch worker
    fetcher_runtime = providers.Factory(
        FetcherRuntime,
        queue=FetchQueueing.fetch_queue,
        gate=FetchQueueing.account_gate,
        clock=Core.clock,
        metrics=fetch_metrics,
    )
    # trackerctl findmy fetch: one run's or one tracker's reports now
    fetch_run_reports = providers.Factory(
        FetchRunReports,
        uow=Core.uow_factory,
        queue=FetchQueueing.fetch_queue,
        gate=FetchQueueing.account_gate,
        clock=Core.clock,
    )


class WorkerContainer(Silencing, Outaging, Eventing, ProcessingQueueing, Detecting):
    """``tracker-worker``: new reports geocoded, rolled up and turned into statuses. A
    factory: each call is a worker of its own (keyword arguments override the settings')."""

    processing_uow = providers.Singleton(PostgresProcessingUnitOfWorkFactory, Core.db_pool)
    worker_metrics = providers.Singleton(PrometheusWorkerMetrics, Core.clock)
    geocoder = providers.Singleton(
        PostgresGeocoder,
        Core.db_pool,
        cache_size=Core.settings.provided.geocoding.cache_size,
        cell_deg=Core.settings.provided.geocoding.cell_deg,
    )
    process_new_reports = providers.Factory(
        ProcessNewReports,
        queue=ProcessingQueueing.processing_queue,
        uow=processing_uow,
        geocoder=geocoder,
        batch_size=Core.settings.provided.worker.batch_size,
        lease_s=providers.Callable(_seconds, Core.settings.provided.worker.lease),
        retry=providers.Factory(
            RetryPolicy,
            base_s=providers.Callable(_seconds, Core.settings.provided.worker.retry_base),
            max_s=providers.Callable(_seconds, Core.settings.provided.worker.retry_max),
        ),
    )
    travel_time_settings = providers.Singleton(_travel_time_settings, Core.settings)
    run_job_batch = providers.Factory(
        RunJobBatch, uow=Core.uow_factory, clock=Core.clock, lease=Core.settings.provided.jobs.lease
    )
    learn_cadences = providers.Factory(
        LearnCadences,
        repo=Silencing.cadence_repository,
        clock=Core.clock,
        rule=Silencing.silence_rule,
        chunk=Core.settings.provided.silence.chunk,
    )
    detect_outages = providers.Factory(
        DetectOutages,
        repo=Outaging.outage_repository,
        clock=Core.clock,
        rule=Core.settings.provided.outages.rule.call(),
    )
    webhook_sender = providers.Singleton(
        AiohttpWebhookSender,
        timeout_s=providers.Callable(_seconds, Core.settings.provided.events.webhook_timeout),
    )
    deliver_webhooks = providers.Factory(
        DeliverWebhooks,
        repo=Eventing.webhook_repository,
        sender=webhook_sender,
        sealer=Sealing.sealer,
        clock=Core.clock,
        policy=Core.settings.provided.events.delivery_policy.call(),
        batch=Core.settings.provided.events.webhook_batch,
        lease=Core.settings.provided.events.webhook_lease,
    )


class Container(CollectorContainer, QueryContainer, FetcherContainer, WorkerContainer):
    """``tracker-server`` (all-in-one), ``trackerctl`` and the tests: every part."""

"""Per-capability parts of the composition roots: the use cases of one capability wired from
the ports they need. ``servers/container.py`` combines them (``providers.Container``) with the
adapters; unit tests build the same parts over fakes, so they test the wiring that runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dependency_injector import containers, providers

from usecases.access import (
    AccessUseCases,
    Authenticate,
    CreateUser,
    DeleteUser,
    FindUserByEmail,
    GetUser,
    ListUsers,
    Login,
    MintServiceToken,
    PrincipalCache,
    RefreshTokens,
    SetClientAccess,
    SetPassword,
)
from usecases.detector_events import DetectorEvents
from usecases.detectors import DetectorAdmin, DetectorQueries
from usecases.devices import (
    DeviceCatalog,
    DeviceProfiles,
    DeviceQueries,
    Devices,
    PlannerCache,
    Rollouts,
)
from usecases.jobs import (
    ControlJob,
    JobDefaults,
    JobQueries,
    JobUseCases,
    RetryJob,
    StartJob,
)
from usecases.keys import (
    AllocateTags,
    CreateKeyBatch,
    ExportKeyBatch,
    ImportExternalTrackers,
    ImportTrackers,
    KeyUseCases,
)
from usecases.setup import (
    CreateBrand,
    CreateClient,
    CreateLocation,
    CreateProductionRun,
    CreateTracker,
    CreateTrackers,
    DeleteResource,
    GetResource,
    ListResources,
    SetupUseCases,
    UpdateResource,
    UpdateTracker,
)
from usecases.sightings import IngestSightings
from usecases.travel_times import TravelTimeQueries


# Which repository of a unit of work each generic setup use case works on.
def _clients(u: Any) -> Any:
    return u.clients


def _brands(u: Any) -> Any:
    return u.brands


def _runs(u: Any) -> Any:
    return u.production_runs


def _locations(u: Any) -> Any:
    return u.locations


def _trackers(u: Any) -> Any:
    return u.trackers


class SetupPart(containers.DeclarativeContainer):
    """Clients, brands, production runs, locations and trackers."""

    uow = providers.Dependency()
    clock = providers.Dependency()

    _clients = providers.Object(_clients)
    _brands = providers.Object(_brands)
    _runs = providers.Object(_runs)
    _locations = providers.Object(_locations)
    _trackers = providers.Object(_trackers)

    usecases = providers.Singleton(
        SetupUseCases,
        create_client=providers.Singleton(CreateClient, uow, clock),
        create_brand=providers.Singleton(CreateBrand, uow, clock),
        create_production_run=providers.Singleton(CreateProductionRun, uow, clock),
        create_location=providers.Singleton(CreateLocation, uow, clock),
        create_tracker=providers.Singleton(CreateTracker, uow, clock),
        create_trackers=providers.Singleton(CreateTrackers, uow, clock),
        update_client=providers.Singleton(UpdateResource, uow, clock, _clients),
        update_brand=providers.Singleton(UpdateResource, uow, clock, _brands),
        update_production_run=providers.Singleton(UpdateResource, uow, clock, _runs),
        update_location=providers.Singleton(UpdateResource, uow, clock, _locations),
        update_tracker=providers.Singleton(UpdateTracker, uow, clock, _trackers),
        delete_client=providers.Singleton(DeleteResource, uow, _clients, admin_only=True),
        delete_brand=providers.Singleton(DeleteResource, uow, _brands),
        delete_production_run=providers.Singleton(DeleteResource, uow, _runs),
        delete_location=providers.Singleton(DeleteResource, uow, _locations),
        delete_tracker=providers.Singleton(DeleteResource, uow, _trackers),
        get_client=providers.Singleton(GetResource, uow, _clients),
        get_brand=providers.Singleton(GetResource, uow, _brands),
        get_production_run=providers.Singleton(GetResource, uow, _runs),
        get_location=providers.Singleton(GetResource, uow, _locations),
        get_tracker=providers.Singleton(GetResource, uow, _trackers),
        list_clients=providers.Singleton(ListResources, uow, _clients),
        list_brands=providers.Singleton(ListResources, uow, _brands),
        list_production_runs=providers.Singleton(ListResources, uow, _runs),
        list_locations=providers.Singleton(ListResources, uow, _locations),
        list_trackers=providers.Singleton(ListResources, uow, _trackers),
    )


class AccessPart(containers.DeclarativeContainer):
    """Sign-in, tokens and users. ``throttle``/``login_limits`` None: sign-in is not
    throttled; ``auth_cache_ttl`` 0: every call looks its caller up."""

    uow = providers.Dependency()
    hasher = providers.Dependency()
    codec = providers.Dependency()
    clock = providers.Dependency()
    policy = providers.Dependency()
    auth_cache_ttl = providers.Object(timedelta(0))
    throttle = providers.Object(None)
    login_limits = providers.Object(None)

    # one cache of callers, dropped from by every change of a user's access
    principal_cache = providers.Singleton(PrincipalCache, clock, auth_cache_ttl)

    usecases = providers.Singleton(
        AccessUseCases,
        login=providers.Singleton(Login, uow, hasher, codec, clock, policy, throttle, login_limits),
        refresh_tokens=providers.Singleton(
            RefreshTokens, uow, codec, clock, policy, throttle, login_limits
        ),
        authenticate=providers.Singleton(Authenticate, uow, codec, principal_cache),
        mint_service_token=providers.Singleton(MintServiceToken, uow, codec, clock),
        create_user=providers.Singleton(CreateUser, uow, hasher, clock),
        set_client_access=providers.Singleton(SetClientAccess, uow, clock, principal_cache),
        set_password=providers.Singleton(SetPassword, uow, hasher, clock, principal_cache),
        delete_user=providers.Singleton(DeleteUser, uow, principal_cache),
        get_user=providers.Singleton(GetUser, uow),
        find_user_by_email=providers.Singleton(FindUserByEmail, uow),
        list_users=providers.Singleton(ListUsers, uow),
    )


class KeysPart(containers.DeclarativeContainer):
    """Key batches, tag allocation, tracker import."""

    uow = providers.Dependency()
    factory = providers.Dependency()
    sealer = providers.Dependency()
    clock = providers.Dependency()

    usecases = providers.Singleton(
        KeyUseCases,
        create_key_batch=providers.Singleton(CreateKeyBatch, uow, factory, sealer, clock),
        export_key_batch=providers.Singleton(ExportKeyBatch, uow),
        allocate_tags=providers.Singleton(AllocateTags, uow),
        import_trackers=providers.Singleton(ImportTrackers, uow, clock),
        import_external_trackers=providers.Singleton(
            ImportExternalTrackers, uow, factory, sealer, clock
        ),
    )


class DetectorsPart(containers.DeclarativeContainer):
    """Detectors and links, sightings in, events and travel times out (issue 16)."""

    uow = providers.Dependency()
    clock = providers.Dependency()
    keys = providers.Dependency()  # DeviceKeyRing
    feed = providers.Dependency()
    # where the feed's positions come from (the primary): a stream's starting picture is
    # read there too, so nothing falls between it and the first poll
    live_uow = providers.Dependency()
    max_clock_skew = providers.Object(timedelta(minutes=5))

    admin = providers.Singleton(DetectorAdmin, uow, clock)
    queries = providers.Singleton(DetectorQueries, uow)
    ingest = providers.Singleton(IngestSightings, uow, clock, keys, max_clock_skew)
    events = providers.Singleton(DetectorEvents, uow, feed)
    travel_times = providers.Singleton(TravelTimeQueries, uow, feed, live_uow)


class JobsPart(containers.DeclarativeContainer):
    """Bulk jobs: start, control and read them (the worker applies their batches)."""

    uow = providers.Dependency()
    factory = providers.Dependency()
    sealer = providers.Dependency()
    clock = providers.Dependency()
    defaults = providers.Dependency(instance_of=JobDefaults)

    usecases = providers.Singleton(
        JobUseCases,
        start_job=providers.Singleton(StartJob, uow, factory, sealer, clock, defaults),
        pause_job=providers.Singleton(ControlJob, uow, clock, "pause"),
        resume_job=providers.Singleton(ControlJob, uow, clock, "resume"),
        cancel_job=providers.Singleton(ControlJob, uow, clock, "cancel"),
        retry_job=providers.Singleton(RetryJob, uow, clock),
        queries=providers.Singleton(JobQueries, uow),
    )


def setup_usecases(uow: Any, clock: Any) -> SetupUseCases:
    """The setup use cases over ``uow`` and ``clock`` (scripts, benchmarks, tests)."""
    usecases: SetupUseCases = SetupPart(uow=uow, clock=clock).usecases()
    return usecases


def access_usecases(
    uow: Any, hasher: Any, codec: Any, clock: Any, policy: Any, **kw: Any
) -> AccessUseCases:
    """The access use cases; ``kw``: ``auth_cache_ttl``, ``throttle``, ``login_limits``."""
    usecases: AccessUseCases = AccessPart(
        uow=uow, hasher=hasher, codec=codec, clock=clock, policy=policy, **kw
    ).usecases()
    return usecases


def key_usecases(uow: Any, factory: Any, sealer: Any, clock: Any) -> KeyUseCases:
    usecases: KeyUseCases = KeysPart(
        uow=uow, factory=factory, sealer=sealer, clock=clock
    ).usecases()
    return usecases


def job_usecases(uow: Any, factory: Any, sealer: Any, clock: Any, defaults: Any) -> JobUseCases:
    usecases: JobUseCases = JobsPart(
        uow=uow, factory=factory, sealer=sealer, clock=clock, defaults=defaults
    ).usecases()
    return usecases


class DevicesPart(containers.DeclarativeContainer):
    """Device types and firmware, profiles, devices and check-ins, rollouts (issue 18)."""

    uow = providers.Dependency()
    sealer = providers.Dependency()
    clock = providers.Dependency()

    planners = providers.Singleton(PlannerCache)
    catalog = providers.Singleton(DeviceCatalog, uow, clock)
    profiles = providers.Singleton(DeviceProfiles, uow, clock, sealer)
    devices = providers.Singleton(Devices, uow, clock, sealer, planners)
    rollouts = providers.Singleton(Rollouts, uow, clock)
    queries = providers.Singleton(DeviceQueries, uow, clock, planners)

"""The Ray backend: actors as Ray actors, on this machine or on every machine of a Ray cluster.

The learner stays in the driver (the process that calls ``learn()``); each actor is a Ray actor (its own process,
possibly on another machine) holding a copy of the learner's VecEnv and a CPU copy of the network. What crosses:

- **parameters**, learner to actors, through Ray's object store: one ``ray.put`` per version that an actor actually
  needs (one copy, read by every actor of a machine from shared memory), read by an actor at most every
  ``sync_every`` of its steps and only when the version changed (R2D2's actors pull every 400 steps);
- **actor steps**, actors to learner, as the results of requests of ``steps_per_request`` steps each. The runner keeps
  ``max_in_flight`` requests queued at every actor, so that an actor never waits for a round trip, and hands the
  learner one step per :meth:`RayRunner.step`, so that the learner's replay ratio is the one it has with the other
  backends. An actor runs at most ``max_in_flight * steps_per_request`` steps ahead of what the learner took; the
  policy lag is logged.

Observations travel as the numpy arrays the actor produced (uint8 frames stay uint8).

Faults: an actor whose process dies (killed, out of memory, its machine lost) is started again, up to
``max_restarts`` times in all, on the same index (its epsilon, its seeds) with fresh episodes; the learner's
network, replay and counters are untouched and learning goes on. An actor that *raises* (an env's exception) is not
restarted: the exception reaches ``learn()`` as :class:`~sb3_frontier.common.runners.ActorError` with the actor's
traceback. :meth:`RayRunner.close`, which the learner calls when ``learn()`` returns, raises or is interrupted,
kills every actor.

The Ray instance: ``ray_address=None`` joins the instance already initialised in this process, or starts a local one
(usage statistics off, no dashboard) that is shut down with the runner's owner or at exit, never one the runner did
not start; ``"auto"`` or an address joins an existing cluster (``ray start --head`` on one machine, ``ray start
--address=HEAD:6379`` on the others).

Ray starts its actors afresh (they are not forked from the learner): the actor factory, and so the VecEnv it copies,
is pickled (cloudpickle; Atari, classic-control and MinAtar VecEnvs pickle).

:class:`RayWorkerPool` runs :class:`~sb3_frontier.common.runners.Worker` objects the same way: no env, no episode,
requests answered with the learner's latest parameters (MuZero's Reanalyze workers), dead workers restarted with
their pending requests sent again.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import pickle
import time
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch as th

from sb3_frontier.common.checks import check_integer
from sb3_frontier.common.runners.base import ActorFactory, ActorStep, Runner, WorkerFactory, start_actor_process
from sb3_frontier.common.runners.normalization import normalization_statistics
from sb3_frontier.common.runners.processes import ActorError

#: Actor steps per request, and requests queued at each actor, unless told otherwise.
DEFAULT_STEPS_PER_REQUEST = 8
DEFAULT_MAX_IN_FLIGHT = 16


def import_ray() -> Any:
    """Ray, or an ImportError saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported: no usage reports, no prompt
    try:
        import ray
    except ImportError as error:  # pragma: no cover - exercised only where Ray is missing
        raise ImportError(
            "runner='ray' needs Ray: pip install 'sb3-frontier[distributed]' (or pip install 'ray>=2.9')"
        ) from error
    return ray


#: Whether this process started the local Ray instance it uses (then it shuts it down at exit).
_started_here = False


def ensure_ray(address: str | None = None, init_kwargs: Mapping[str, Any] | None = None) -> bool:
    """
    Connect to Ray: the instance already initialised in this process, a new local one (``address=None``), or a
    cluster (``"auto"`` or ``"host:port"``).

    :param address: where the cluster is (None: this machine)
    :param init_kwargs: further keyword arguments of ``ray.init`` (``num_cpus``, ``object_store_memory``, ...)
    :return: whether this call started Ray
    """
    global _started_here
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, configure_logging=False, log_to_driver=True)
    if address is None:
        kwargs["num_cpus"] = os.cpu_count() or 1
    kwargs.update(init_kwargs or {})
    ray.init(address=address, **kwargs)
    if address is None:
        _started_here = True
        atexit.register(shutdown_ray)
    return True


def shutdown_ray() -> None:
    """Shut down the local Ray instance if this process started it (one joined or initialised by the user stays)."""
    global _started_here
    if _started_here:
        ray = import_ray()
        with contextlib.suppress(Exception):
            ray.shutdown()
        _started_here = False


def _to_numpy(parameters: Mapping[str, th.Tensor]) -> dict[str, Any]:
    """A state dict as numpy arrays (read without a copy from Ray's object store); dtypes numpy lacks stay tensors.
    The arrays may share memory with the parameters: ``ray.put`` copies them at once."""
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        tensor = value.detach().to("cpu")
        try:
            out[name] = tensor.numpy()
        except TypeError:  # bfloat16 and friends
            out[name] = tensor.clone()
    return out


def _to_torch(parameters: Mapping[str, Any]) -> dict[str, th.Tensor]:
    return {
        name: th.from_numpy(np.array(value)) if isinstance(value, np.ndarray) else value for name, value in parameters.items()
    }


def _check_options(integers: Mapping[str, tuple[Any, int]], num_cpus: tuple[str, Any], start_timeout: Any) -> None:
    """Raise ValueError for an integer option below its minimum, CPUs <= 0 or a start timeout <= 0."""
    for name, (value, minimum) in integers.items():
        check_integer(name, value, minimum)
    if not num_cpus[1] > 0:
        raise ValueError(f"{num_cpus[0]} must be > 0, got {num_cpus[1]!r}")
    if not start_timeout > 0:
        raise ValueError(f"start_timeout must be > 0 seconds, got {start_timeout!r}")


class _ObjectStoreParameters:
    """
    The learner's latest parameters and their version, put into Ray's object store only when a reader needs them,
    once per version.

    :param parameters: the state dict of version 0
    """

    def __init__(self, parameters: Mapping[str, th.Tensor]) -> None:
        self.parameters = dict(parameters)
        self.version = 0
        self._ref: Any = None
        self._ref_version = -1

    def update(self, parameters: Mapping[str, th.Tensor], version: int) -> None:
        """New parameters (put into the object store when next read)."""
        self.parameters = dict(parameters)
        self.version = int(version)

    def ref(self) -> Any:
        """The object-store reference of the latest parameters."""
        if self._ref is None or self._ref_version != self.version:
            self._ref = import_ray().put(_to_numpy(self.parameters))
            self._ref_version = self.version
        return self._ref


def _start_host(host: type, num_cpus: float, what: str, *args: Any) -> Any:
    """Start ``host(*args)`` as a Ray actor of ``num_cpus`` CPUs (not restarted by Ray: the caller restarts it)."""
    ray = import_ray()
    remote = ray.remote(host).options(num_cpus=num_cpus, max_restarts=0, max_concurrency=1)
    try:
        return remote.remote(*args)
    except Exception as error:  # the factory (and the VecEnv it copies) is pickled here
        raise RuntimeError(
            f"Could not start Ray {what}: {error}. Ray pickles the factory and what it holds (an actor's VecEnv); an "
            "env that does not pickle cannot run on Ray (runner='processes' inherits it by fork)."
        ) from error


def _no_room(what: str, count: int, num_cpus: float, timeout: float, option: str) -> ActorError:
    """The error of a Ray actor that did not answer its first request in time."""
    cpus = import_ray().cluster_resources().get("CPU", 0.0)
    return ActorError(
        f"Ray {what} gave no answer within {timeout:.0f} s: the cluster may lack room for {count} of "
        f"{num_cpus} CPU(s) each (it has {cpus:g} CPUs), or building it takes longer (raise {option})"
    )


class _ActorHost:
    """
    What runs inside one Ray actor: the algorithm's actor, stepped in requests of a few steps.

    :param factory: builds the actor (pickled by Ray)
    :param index: the actor's index
    :param sync_every: actor steps between two loads of the parameters (when their version changed)
    :param torch_threads: torch threads of the actor's process
    """

    def __init__(self, factory: ActorFactory, index: int, sync_every: int, torch_threads: int) -> None:
        start_actor_process(torch_threads)
        self.index = index
        self.sync_every = sync_every
        self.actor = factory(index)
        self.actor.reset()
        self.steps = 0
        self.version = -1

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def run(self, n_steps: int, parameters: list[Any], version: int, progress_remaining: float) -> bytes:
        """
        Take ``n_steps`` steps; at each multiple of ``sync_every`` load the parameters if their version changed.

        :param parameters: ``[]`` or ``[ObjectRef]`` of the parameters of ``version`` (in a list, so that Ray hands
            over the reference and the actor fetches the parameters only when it loads them)
        """
        ray = import_ray()
        steps = []
        for _ in range(n_steps):
            if self.steps % self.sync_every == 0:
                if parameters and version != self.version:
                    self.actor.sync(_to_torch(ray.get(parameters[0])), version, progress_remaining)
                    self.version = version
                else:
                    self.actor.sync(None, self.actor.policy_version, progress_remaining)
            step = self.actor.step()
            step.actor = self.index
            if self.steps % self.sync_every == 0 and self.actor.env is not None:
                step.env_statistics = normalization_statistics(self.actor.env)
            steps.append(step)
            self.steps += 1
        # Pickled here: the learner unpickles private, writable arrays (Ray hands numpy arrays over read-only, shared
        # with its object store) and later changes to the actor's arrays (a frame stack updated in place) stay out.
        return pickle.dumps(steps, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        """Release the actor's envs."""
        self.actor.close()


def _kill(actors: list[Any]) -> None:
    """Kill Ray actors (their processes end; nothing restarts them)."""
    ray = import_ray()
    if not ray.is_initialized():
        return
    for handle in actors:
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)


class RayRunner(Runner):
    """
    Runs ``n_actors`` actors as Ray actors (see the module docstring for what crosses between them and the learner).

    :param factory: builds actor ``i`` inside its Ray actor (pickled; owning its envs and a CPU copy of the network)
    :param n_actors: number of actors over the cluster
    :param parameters: the network's state dict at start (later ones come by :meth:`sync`)
    :param n_envs: envs each actor steps (the environment steps of one actor step)
    :param sync_every: actor steps between two reads of the parameters (read only when their version changed)
    :param steps_per_request: actor steps per request (fewer round trips; the learner still takes them one by one)
    :param max_in_flight: requests queued at each actor (with ``steps_per_request``: how far an actor may run ahead
        of the learner, 128 steps by default as for actor processes, so that acting goes on while the learner trains)
    :param ray_address: None (this process's Ray, or a new local instance), ``"auto"`` or ``"host:port"``
    :param num_cpus_per_actor: CPUs Ray reserves for each actor (fractions share a CPU)
    :param torch_threads: torch threads of each actor process
    :param max_restarts: restarts of dead actors allowed over one ``learn()`` (all actors together)
    :param start_timeout: seconds to wait for the first steps of an actor before reporting that the cluster has no
        room for it
    :param ray_init_kwargs: further keyword arguments of ``ray.init`` when the runner starts or joins Ray
    """

    shares_learner_network = False

    def __init__(
        self,
        factory: ActorFactory,
        n_actors: int,
        parameters: Mapping[str, th.Tensor],
        n_envs: int,
        sync_every: int = 1,
        steps_per_request: int = DEFAULT_STEPS_PER_REQUEST,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        ray_address: str | None = None,
        num_cpus_per_actor: float = 1.0,
        torch_threads: int = 1,
        max_restarts: int = 10,
        start_timeout: float = 300.0,
        ray_init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        integers = dict(
            n_actors=(n_actors, 1),
            sync_every=(sync_every, 1),
            steps_per_request=(steps_per_request, 1),
            max_in_flight=(max_in_flight, 1),
            torch_threads=(torch_threads, 1),
            max_restarts=(max_restarts, 0),
        )
        _check_options(integers, ("num_cpus_per_actor", num_cpus_per_actor), start_timeout)
        import_ray()  # fail here, at construction, when Ray is missing
        self.factory = factory
        self.n_actors = int(n_actors)
        self.n_envs = int(n_envs)
        self.sync_every = int(sync_every)
        self.steps_per_request = int(steps_per_request)
        self.max_in_flight = int(max_in_flight)
        self.ray_address = ray_address
        self.num_cpus_per_actor = float(num_cpus_per_actor)
        self.torch_threads = int(torch_threads)
        self.max_restarts = int(max_restarts)
        self.start_timeout = float(start_timeout)
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.progress_remaining = 1.0
        self._parameters = _ObjectStoreParameters(parameters)
        self._actors: list[Any] = []
        self._generation: list[int] = []  # how many times actor i was started (its requests carry it)
        self._in_flight: dict[Any, tuple[int, int, int, float]] = {}  # ref -> (actor, generation, number, submitted)
        self._submitted: list[int] = []  # requests submitted to actor i's current process
        self._delivered: list[int] = []  # requests of it whose steps went to the learner (they go in order)
        self._early: list[dict[int, list[ActorStep] | ActorError]] = []  # answers that came before an earlier one
        self._answered: list[bool] = []  # whether actor i's current process answered once
        self._ready: collections.deque[ActorStep] = collections.deque()
        #: restarts of dead actors since the last reset
        self.restarts = 0
        self._finalizer: weakref.finalize | None = None

    # ------------------------------------------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        """Whether the actors were started and not closed."""
        return bool(self._actors)

    def reset(self, observations: Any | None = None) -> None:
        """(Re)start the actors: each builds its envs and starts new episodes (``observations`` unused)."""
        self.close()
        ensure_ray(self.ray_address, self.ray_init_kwargs)
        self.restarts = 0
        self._actors = [None] * self.n_actors
        self._generation = [0] * self.n_actors
        self._answered = [False] * self.n_actors
        self._submitted = [0] * self.n_actors
        self._delivered = [0] * self.n_actors
        self._early = [{} for _ in range(self.n_actors)]
        self._ready.clear()
        self._in_flight.clear()
        self._finalizer = weakref.finalize(self, _kill, self._actors)
        try:
            for index in range(self.n_actors):
                self._start(index)
        except BaseException:
            self.close()
            raise

    @property
    def version(self) -> int:
        """Version of the latest parameters handed to :meth:`sync`."""
        return self._parameters.version

    def _start(self, index: int) -> None:
        handle = _start_host(
            _ActorHost, self.num_cpus_per_actor, f"actor {index}", self.factory, index, self.sync_every, self.torch_threads
        )
        self._actors[index] = handle
        self._generation[index] += 1
        self._answered[index] = False
        self._submitted[index] = self._delivered[index] = 0
        self._early[index].clear()
        for _ in range(self.max_in_flight):
            self._submit(index)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills the actors once
            self._finalizer = None
        self._actors = []
        self._in_flight.clear()
        self._ready.clear()

    # ------------------------------------------------------------------------------------------------- transport
    def sync(self, parameters: Mapping[str, th.Tensor] | None, version: int, progress_remaining: float) -> None:
        if parameters is None:
            raise ValueError("Ray actors hold their own network: sync() needs the learner's state dict")
        self._parameters.update(parameters, version)  # put into the object store when an actor next loads them
        self.progress_remaining = float(progress_remaining)

    def _parameters_for(self, index: int) -> list[Any]:
        """``[ref]`` if actor ``index``'s next request crosses a parameter read and a newer version exists, else ``[]``."""
        first = self._submitted[index] * self.steps_per_request  # the request's first step of the actor
        last = first + self.steps_per_request - 1
        crosses = first % self.sync_every == 0 or first // self.sync_every != last // self.sync_every
        return [self._parameters.ref()] if crosses else []

    def _submit(self, index: int) -> None:
        handle = self._actors[index]
        parameters = self._parameters_for(index)
        ref = handle.run.remote(self.steps_per_request, parameters, self.version, self.progress_remaining)
        self._in_flight[ref] = (index, self._generation[index], self._submitted[index], time.monotonic())
        self._submitted[index] += 1

    def step(self) -> list[ActorStep]:
        """The next actor step (waiting for the actors when none is ready), tagged with its policy lag in updates."""
        if not self.running:
            raise RuntimeError("The Ray actors are not running: reset() the runner first")
        while not self._ready:
            self._receive()
        step = self._ready.popleft()
        step.stats = {**step.stats, "runner/policy_lag": float(self.version - step.policy_version)}
        return [step]

    def _receive(self) -> None:
        """Wait for one answered request; restart its actor if it died, raise if it raised."""
        ray = import_ray()
        ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=1.0)
        if not ready:
            self._check_started()
            return
        ref = ready[0]
        index, generation, number, _ = self._in_flight.pop(ref)
        answer: list[ActorStep] | ActorError
        try:
            answer = pickle.loads(ray.get(ref))
        except ray.exceptions.RayActorError as error:
            if error.actor_init_failed:  # building the actor (its envs, its network) raised: no restart cures that
                self.close()
                raise ActorError(f"Actor {index} could not be built:\n{error}") from None
            self._on_death(index, generation, error)  # its process died
            return
        except ray.exceptions.RayTaskError as error:  # the actor raised: its traceback goes to the learner, in turn
            answer = ActorError(f"Actor {index} raised:\n{error}")
        if generation != self._generation[index]:
            return  # answered by a process since replaced: its episodes were abandoned with it
        self._answered[index] = True
        early = self._early[index]
        early[number] = answer
        # An actor's steps reach the learner in the order it took them (Ray answers requests in any order), and its
        # exception after the steps before it (a later request, run after the failing one, may fail first).
        while self._delivered[index] in early:
            delivered = early.pop(self._delivered[index])
            if isinstance(delivered, ActorError):
                self.close()
                raise delivered
            self._ready.extend(delivered)
            self._delivered[index] += 1
            self._submit(index)

    def _on_death(self, index: int, generation: int, error: Exception) -> None:
        if generation != self._generation[index]:
            return  # another request of the process already replaced
        if self.restarts >= self.max_restarts:
            self.close()
            raise ActorError(f"Ray actor {index} died and the runner's {self.max_restarts} restart(s) are used up: {error}")
        self.restarts += 1
        stale = [ref for ref, (i, g, _, _) in self._in_flight.items() if i == index and g == generation]
        for ref in stale:
            del self._in_flight[ref]
        with contextlib.suppress(Exception):
            import_ray().kill(self._actors[index], no_restart=True)
        self._start(index)

    def _check_started(self) -> None:
        """Raise if an actor has not answered its first request within ``start_timeout`` (no room in the cluster)."""
        now = time.monotonic()
        for index, generation, _, submitted in self._in_flight.values():
            if not self._answered[index] and generation == self._generation[index] and now - submitted > self.start_timeout:
                option = "runner_kwargs['start_timeout']"
                error = _no_room(f"actor {index}", self.n_actors, self.num_cpus_per_actor, self.start_timeout, option)
                self.close()
                raise error

    @property
    def env_steps_per_step(self) -> int:
        return self.n_envs

    @property
    def pids(self) -> list[int]:
        """Process ids of the running actors (asks each actor)."""
        ray = import_ray()
        return [int(pid) for pid in ray.get([handle.pid.remote() for handle in self._actors])]


class _WorkerHost:
    """
    What runs inside one Ray actor of a :class:`RayWorkerPool`: a worker answering requests.

    :param factory: builds the worker (pickled by Ray)
    :param index: the worker's index
    :param torch_threads: torch threads of the worker's process
    """

    def __init__(self, factory: WorkerFactory, index: int, torch_threads: int) -> None:
        start_actor_process(torch_threads)
        self.worker = factory(index)

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()

    def run(self, request: Any, parameters: list[Any]) -> Any:
        """
        Answer a request, first loading the parameters when they come with it.

        :param parameters: ``[]`` or ``[ObjectRef]`` of newer parameters (a Ray actor runs one caller's requests in
            the order they were submitted, so that a worker loads each version once, before the requests that follow)
        """
        if parameters:
            self.worker.load(_to_torch(import_ray().get(parameters[0])))
        return self.worker(request)


class RayWorkerPool:
    """
    Workers as Ray actors answering the learner's requests with its latest parameters (MuZero's Reanalyze workers).

    A request goes to the worker with the fewest pending ones, with the parameters when that worker has not loaded
    their version yet (one ``ray.put`` per version, read from the object store). Answers are read by ticket, in any
    order; Ray hands numpy arrays over read-only. A worker whose process dies is started again (up to
    ``max_restarts`` in all) and its pending requests are sent again, so that no answer is lost; a worker that raises
    raises :class:`~sb3_frontier.common.runners.ActorError` with its traceback in the learner. :meth:`close` kills every
    worker (also when the pool is garbage collected).

    :param factory: builds worker ``i`` inside its Ray actor (pickled)
    :param n_workers: number of workers
    :param parameters: the network's state dict at start (later ones come by :meth:`sync`)
    :param ray_address: None (this process's Ray, or a new local instance), ``"auto"`` or ``"host:port"``
    :param num_cpus_per_worker: CPUs Ray reserves for each worker (fractions share a CPU)
    :param torch_threads: torch threads of each worker process
    :param max_restarts: restarts of dead workers allowed until :meth:`close` (all workers together)
    :param start_timeout: seconds to wait for a new worker's first answer before reporting that the cluster has no
        room for it
    :param ray_init_kwargs: further keyword arguments of ``ray.init`` when the pool starts or joins Ray
    :param name: what the workers are called in errors (``"Reanalyze worker"``)
    :param option: where the user sets the pool's options (named in errors)
    """

    def __init__(
        self,
        factory: WorkerFactory,
        n_workers: int,
        parameters: Mapping[str, th.Tensor],
        ray_address: str | None = None,
        num_cpus_per_worker: float = 1.0,
        torch_threads: int = 1,
        max_restarts: int = 10,
        start_timeout: float = 300.0,
        ray_init_kwargs: Mapping[str, Any] | None = None,
        name: str = "worker",
        option: str = "start_timeout",
    ) -> None:
        integers = dict(n_workers=(n_workers, 1), torch_threads=(torch_threads, 1), max_restarts=(max_restarts, 0))
        _check_options(integers, ("num_cpus_per_worker", num_cpus_per_worker), start_timeout)
        import_ray()
        self.factory = factory
        self.n_workers = int(n_workers)
        self.ray_address = ray_address
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.torch_threads = int(torch_threads)
        self.max_restarts = int(max_restarts)
        self.start_timeout = float(start_timeout)
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.name = name
        self.option = option
        self._parameters = _ObjectStoreParameters(parameters)
        self._workers: list[Any] = []
        self._generation: list[int] = []
        self._loaded: list[int] = []  # the parameter version sent last to worker i's current process
        self._answered: list[bool] = []
        self._pending: dict[int, tuple[int, int, Any, Any, float]] = {}  # ticket -> (worker, generation, request, ref, t)
        self._next_ticket = 0
        #: restarts of dead workers since :meth:`start`
        self.restarts = 0
        self._finalizer: weakref.finalize | None = None

    @property
    def running(self) -> bool:
        """Whether the workers were started and not closed."""
        return bool(self._workers)

    @property
    def version(self) -> int:
        """Version of the latest parameters handed to :meth:`sync`."""
        return self._parameters.version

    @property
    def n_pending(self) -> int:
        """Requests submitted and not yet read."""
        return len(self._pending)

    def start(self) -> None:
        """(Re)start the workers; pending requests are forgotten."""
        self.close()
        ensure_ray(self.ray_address, self.ray_init_kwargs)
        self.restarts = 0
        self._workers = [None] * self.n_workers
        self._generation = [0] * self.n_workers
        self._loaded = [-1] * self.n_workers
        self._answered = [False] * self.n_workers
        self._finalizer = weakref.finalize(self, _kill, self._workers)
        try:
            for index in range(self.n_workers):
                self._start(index)
        except BaseException:
            self.close()
            raise

    def _start(self, index: int) -> None:
        what = f"{self.name} {index}"
        self._workers[index] = _start_host(
            _WorkerHost, self.num_cpus_per_worker, what, self.factory, index, self.torch_threads
        )
        self._generation[index] += 1
        self._loaded[index] = -1
        self._answered[index] = False

    def close(self) -> None:
        """Kill every worker; pending requests are forgotten. Safe to call more than once."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._workers = []
        self._pending.clear()

    def sync(self, parameters: Mapping[str, th.Tensor], version: int) -> None:
        """
        Parameters for the requests submitted from now on.

        :param parameters: the network's state dict
        :param version: its version (the learner's update count); a worker loads each version once
        """
        self._parameters.update(parameters, version)

    def submit(self, request: Any) -> int:
        """
        Send a request to the least busy worker.

        :param request: what the worker's ``__call__`` takes (pickled by Ray; numpy arrays travel without a copy)
        :return: the ticket that :meth:`result` takes
        """
        if not self.running:
            raise RuntimeError(f"The {self.name}s are not running: start() the pool first")
        busy = [0] * self.n_workers
        for worker, *_ in self._pending.values():
            busy[worker] += 1
        ticket = self._next_ticket
        self._next_ticket += 1
        self._send(ticket, busy.index(min(busy)), request)
        return ticket

    def _send(self, ticket: int, index: int, request: Any) -> None:
        parameters = []
        if self._loaded[index] != self._parameters.version:
            parameters = [self._parameters.ref()]
            self._loaded[index] = self._parameters.version
        ref = self._workers[index].run.remote(request, parameters)
        self._pending[ticket] = (index, self._generation[index], request, ref, time.monotonic())

    def result(self, ticket: int) -> Any:
        """
        The answer to a request (waiting for it), once: the ticket is then forgotten.

        :param ticket: what :meth:`submit` returned
        :return: the worker's answer
        """
        if ticket not in self._pending:
            raise KeyError(f"No pending request with ticket {ticket} (each answer is read once)")
        ray = import_ray()
        while True:
            index, generation, _, ref, submitted = self._pending[ticket]
            ready, _ = ray.wait([ref], num_returns=1, timeout=1.0)
            if not ready:
                if not self._answered[index] and time.monotonic() - submitted > self.start_timeout:
                    error = _no_room(
                        f"{self.name} {index}", self.n_workers, self.num_cpus_per_worker, self.start_timeout, self.option
                    )
                    self.close()
                    raise error
                continue
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayActorError as error:
                if error.actor_init_failed:
                    self.close()
                    raise ActorError(f"{self.name.capitalize()} {index} could not be built:\n{error}") from None
                self._on_death(index, generation, error)
                continue
            except ray.exceptions.RayTaskError as error:
                self.close()
                raise ActorError(f"{self.name.capitalize()} {index} raised:\n{error}") from None
            del self._pending[ticket]
            self._answered[index] = True
            return answer

    def _on_death(self, index: int, generation: int, error: Exception) -> None:
        """Restart a dead worker and send its pending requests again, in their order."""
        if generation != self._generation[index]:
            return  # already restarted
        if self.restarts >= self.max_restarts:
            self.close()
            used_up = f"the pool's {self.max_restarts} restart(s) are used up"
            raise ActorError(f"Ray {self.name} {index} died and {used_up}: {error}")
        self.restarts += 1
        with contextlib.suppress(Exception):
            import_ray().kill(self._workers[index], no_restart=True)
        self._start(index)
        for ticket in sorted(t for t, (i, *_) in self._pending.items() if i == index):
            self._send(ticket, index, self._pending[ticket][2])

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (asks each worker)."""
        ray = import_ray()
        return [int(pid) for pid in ray.get([handle.pid.remote() for handle in self._workers])]


__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_STEPS_PER_REQUEST",
    "RayRunner",
    "RayWorkerPool",
    "ensure_ray",
    "import_ray",
    "shutdown_ray",
]

"""The local-process backend: actor processes on this machine, each with its own envs and a CPU copy of the network.

Acting overlaps learning: the actors step their envs and run the behaviour policy while the learner trains, and the
learner's loop only waits when no actor step is ready. What crosses process boundaries:

- **parameters**, learner to actors, through one copy of the state dict in shared memory with a version number:
  :meth:`ProcessRunner.sync` writes it, each actor reads it when the version changed, at most every ``sync_every`` of
  its steps (R2D2's actors pull every 400 steps);
- **actor steps**, actors to learner, through one pipe per actor. An actor serialises each step at once and a sender
  thread writes it to the pipe, so that the actor runs on while the learner trains, up to ``max_pending`` steps
  ahead (a pipe alone holds less than one Atari step); then it waits, so the learner sets the pace, its replay ratio
  holds and the policy lag stays bounded (it is logged). The actor holds the pipe's only write end: an actor that
  dies, even in the middle of a message, reads as the end of its pipe.

Lifecycle: the processes start at the first :meth:`~ProcessRunner.reset` and stop in :meth:`~ProcessRunner.close`
(which the learner calls when ``learn()`` returns, raises or is interrupted), and with the runner's owner at exit in any
case. An actor that raises sends its traceback, which the learner raises as :class:`ActorError`; an actor process that
dies (killed, out of memory) is reported at the learner's next :meth:`~ProcessRunner.step`, not waited on. Actor
processes ignore Ctrl-C: the learner receives it and stops them.

The default start method is ``"fork"`` where the platform has it: the actors inherit the envs the learner was given
(Atari envs cannot be pickled), as PyTorch's DataLoader workers do, and run one torch thread. ``"spawn"`` and
``"forkserver"`` need an actor factory that pickles (:class:`VecEnvCopy` pickles the VecEnv with cloudpickle, its
VecEnv wrappers included).
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import io
import multiprocessing as mp
import queue
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, NoReturn

import cloudpickle
import numpy as np
import torch as th
from stable_baselines3.common.monitor import ResultsWriter
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from sb3_frontier.common.runners.base import ActorFactory, ActorStep, Runner, start_actor_process
from sb3_frontier.common.runners.normalization import normalization_statistics

#: Steps an actor process may have produced and not yet handed to the learner, unless told otherwise.
DEFAULT_MAX_PENDING = 128


class ActorError(RuntimeError):
    """An actor raised or its process died; the message holds the actor's traceback or exit code."""


class SharedParameters:
    """
    A state dict in shared memory with a version number: written by the learner, read by the actors.

    Every entry keeps its own dtype and shape; readers take a consistent copy under the lock.

    :param template: a state dict whose names, dtypes and shapes fix the layout (its values are the version 0)
    :param context: the multiprocessing context of the processes that share it
    """

    def __init__(self, template: Mapping[str, th.Tensor], context: Any) -> None:
        self.tensors = {name: value.detach().to("cpu", copy=True).share_memory_() for name, value in template.items()}
        self.lock = context.Lock()
        self.version = context.Value("q", 0, lock=False)
        self.progress_remaining = context.Value("d", 1.0, lock=False)

    def write(
        self,
        state_dict: Mapping[str, th.Tensor],
        version: int,
        progress_remaining: float,
        check: Callable[[], None] | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        """
        Copy ``state_dict`` (same names and shapes as the template) in, with its version and the learner's progress.

        :param check: called every ``poll_interval`` seconds while the lock is taken by a reader; it should raise
            when a reader died, since a process killed while reading (SIGKILL, the OOM killer) never releases the
            lock. Without it the writer waits for as long as the lock is held.
        :param poll_interval: seconds between two calls of ``check``
        """
        missing = self.tensors.keys() - state_dict.keys()
        if missing:
            raise KeyError(f"The parameters lack {sorted(missing)} of the actors' network")
        while not self.lock.acquire(timeout=poll_interval):
            if check is not None:
                check()
        try:
            with th.no_grad():
                for name, shared in self.tensors.items():
                    shared.copy_(state_dict[name])
            self.version.value = int(version)
            self.progress_remaining.value = float(progress_remaining)
        finally:
            self.lock.release()

    def read(self, known_version: int) -> tuple[dict[str, th.Tensor] | None, int, float]:
        """
        A private copy of the parameters if their version differs from ``known_version``.

        :return: (parameters or None when unchanged, version, the learner's progress remaining)
        """
        with self.lock:
            version, progress = int(self.version.value), float(self.progress_remaining.value)
            if version == known_version:
                return None, version, progress
            return {name: shared.clone() for name, shared in self.tensors.items()}, version, progress


class StopFlag:
    """
    The learner's stop signal to its actor processes, without a lock.

    A :class:`multiprocessing.Event` takes a lock in ``is_set()``: an actor killed while checking it (SIGKILL, the OOM
    killer) leaves that lock taken, and the learner's ``set()`` then waits forever. A flag in shared memory is written
    by the learner only, so it needs none.

    :param context: the multiprocessing context of the processes that share it
    """

    def __init__(self, context: Any) -> None:
        self._flag = context.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._flag.value = True

    def is_set(self) -> bool:
        return bool(self._flag.value)


def _rebuild_vec_env_wrapper(cls: type[VecEnvWrapper], state: dict[str, Any], venv: VecEnv) -> VecEnvWrapper:
    wrapper = cls.__new__(cls)
    wrapper.__dict__.update(state)
    wrapper.venv = venv
    wrapper.class_attributes = dict(inspect.getmembers(cls))  # what VecEnvWrapper.__init__ computes
    return wrapper


def _no_results_writer() -> None:
    return None


class _VecEnvPickler(cloudpickle.Pickler):
    """cloudpickle, with SB3's VecEnv wrappers pickled whole: their ``class_attributes`` (every member of the class,
    ``_abc_impl`` included, which does not pickle) are recomputed on loading, and ``VecNormalize`` keeps its ``venv``
    (its own ``__getstate__`` drops it). ``Monitor`` files stay with the learner: a copy's ``Monitor`` writes none
    (its episode statistics still reach the learner in the infos)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ResultsWriter):
            return _no_results_writer, ()
        if isinstance(obj, VecEnvWrapper):
            state = {k: v for k, v in vars(obj).items() if k not in ("class_attributes", "venv")}
            return _rebuild_vec_env_wrapper, (type(obj), state, obj.venv)
        return super().reducer_override(obj)


def dumps_vec_env(env: VecEnv) -> bytes:
    """The VecEnv (with its VecEnv wrappers) as bytes, by value where cloudpickle pickles by value."""
    buffer = io.BytesIO()
    _VecEnvPickler(buffer).dump(env)
    return buffer.getvalue()


class _PickledVecEnv:
    """Holds a VecEnv; pickles it with :func:`dumps_vec_env`."""

    def __init__(self, env: VecEnv) -> None:
        self.env = env

    def __getstate__(self) -> bytes:
        return dumps_vec_env(self.env)

    def __setstate__(self, data: bytes) -> None:
        self.env = cloudpickle.loads(data)


class VecEnvCopy:
    """
    The learner's VecEnv as an actor process receives it: inherited under ``fork``, pickled under ``spawn`` and by Ray
    (:func:`dumps_vec_env`); each actor's copy is reseeded so that no two actors replay the same episodes.

    :param env: the VecEnv (with its VecEnv wrappers: frame stacking, transposition)
    :param seed: actor ``i`` seeds its envs from ``seed + i * env.num_envs`` (actor 0 as the in-process learner would);
        None draws fresh seeds
    """

    def __init__(self, env: VecEnv, seed: int | None) -> None:
        self._env = _PickledVecEnv(env)
        self.num_envs = env.num_envs
        self.seed = seed

    def build(self, index: int) -> VecEnv:
        """Actor ``index``'s copy, reseeded."""
        env: VecEnv = self._env.env
        seed = self.seed if self.seed is not None else int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        env.seed(seed + index * self.num_envs)
        return env

    def actor_seed(self, index: int) -> int | None:
        """A seed for actor ``index``'s own random numbers (exploration), or None."""
        return None if self.seed is None else self.seed + 7919 * (index + 1)


def _actor_main(
    index: int,
    factory: ActorFactory,
    parameters: SharedParameters,
    connection: Connection,
    stop: StopFlag,
    sync_every: int,
    torch_threads: int,
    max_pending: int = 1,
) -> None:
    """Body of an actor process: build the actor, then step it, pulling parameters, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the learner, which stops the actors
    start_actor_process(torch_threads)
    outbox = _Outbox(connection, max_pending, stop)
    actor = None
    try:
        actor = factory(index)
        version = -1
        actor.reset()
        steps = 0
        while not stop.is_set():
            if steps % sync_every == 0:
                state, version, progress = parameters.read(version)
                actor.sync(state, version, progress)
            step = actor.step()
            step.actor = index
            if steps % sync_every == 0 and actor.env is not None:
                step.env_statistics = normalization_statistics(actor.env)
            if not outbox.put(("step", index, step)):  # waits while max_pending steps are unsent
                break
            steps += 1
    except BaseException:  # everything an actor raises goes to the learner
        if not stop.is_set():
            outbox.put(("error", index, traceback.format_exc()))
    finally:
        outbox.close()
        if actor is not None:
            with contextlib.suppress(Exception):
                actor.close()
        connection.close()


class _Outbox:
    """
    An actor's sending side: messages are serialised by the caller (so later changes to their arrays, e.g. a frame
    stack updated in place, do not reach them) and written to the pipe by a thread, at most ``max_pending`` unsent.

    :param connection: the pipe's write end
    :param max_pending: messages held before :meth:`put` waits
    :param stop: the runner's stop flag (a waiting :meth:`put` gives up once it is set)
    """

    def __init__(self, connection: Connection, max_pending: int, stop: StopFlag) -> None:
        self.connection = connection
        self.stop = stop
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max(max_pending, 1))
        self.thread = threading.Thread(target=self._pump, name="sb3-frontier-actor-sender", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while True:
            payload = self.queue.get()
            if payload is None:
                return
            try:
                self.connection.send_bytes(payload)
            except OSError:  # the learner closed its end: nothing more to send
                return

    def put(self, message: tuple[Any, ...]) -> bool:
        """Queue a message; False if it could not be sent (stopping, or the learner's end is closed)."""
        payload = bytes(ForkingPickler.dumps(message))
        while self.thread.is_alive():
            try:
                self.queue.put(payload, timeout=0.1)
                return True
            except queue.Full:
                if self.stop.is_set():
                    return False
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (while the learner reads), then stop the sender thread."""
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join(max(deadline - time.monotonic(), 0.0))


def _shutdown(processes: list[BaseProcess], stop: StopFlag, connections: list[Connection], timeout: float) -> None:
    """Stop the actor processes: ask, read what they still send while they finish, then terminate stragglers."""
    stop.set()
    deadline = time.monotonic() + timeout
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        for connection in wait(connections, timeout=0.01):
            with contextlib.suppress(EOFError, OSError):
                connection.recv()  # type: ignore[union-attr,call-arg]  # unblocks an actor waiting to send
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
        process.join(1.0)
    for connection in connections:
        connection.close()


class ProcessRunner(Runner):
    """
    Runs ``n_actors`` actors in processes of this machine (see the module docstring for what crosses between them).

    :param factory: builds actor ``i`` inside its process (owning its envs and a CPU copy of the network)
    :param n_actors: number of actor processes
    :param parameters: the network's state dict at start (fixes the shared layout; later ones come by :meth:`sync`)
    :param n_envs: envs each actor steps (the environment steps of one actor step)
    :param sync_every: actor steps between two reads of the parameters (read only when their version changed)
    :param max_pending: steps an actor may have produced and not yet handed to the learner (how far acting runs
        ahead of learning)
    :param start_method: multiprocessing start method (None: ``"fork"`` where available, else ``"spawn"``)
    :param torch_threads: torch threads of each actor process
    :param poll_interval: seconds between liveness checks while the learner waits for a step
    :param shutdown_timeout: seconds the actors get to stop before they are terminated
    """

    shares_learner_network = False

    def __init__(
        self,
        factory: ActorFactory,
        n_actors: int,
        parameters: Mapping[str, th.Tensor],
        n_envs: int,
        sync_every: int = 1,
        max_pending: int = DEFAULT_MAX_PENDING,
        start_method: str | None = None,
        torch_threads: int = 1,
        poll_interval: float = 0.1,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if n_actors < 1:
            raise ValueError(f"n_actors must be >= 1, got {n_actors}")
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1 actor step, got {sync_every}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1 actor step, got {max_pending}")
        self.max_pending = max_pending
        if start_method is None:
            start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        self.context: Any = mp.get_context(start_method)
        self.factory = factory
        self.n_actors = n_actors
        self.n_envs = n_envs
        self.sync_every = sync_every
        self.torch_threads = torch_threads
        self.poll_interval = poll_interval
        self.shutdown_timeout = shutdown_timeout
        self.parameters = SharedParameters(parameters, self.context)
        self.version = 0
        self._processes: list[BaseProcess] = []
        self._connections: list[Connection] = []
        self._stop: StopFlag | None = None
        self._finalizer: weakref.finalize | None = None

    # ------------------------------------------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        """Whether the actor processes were started and not closed."""
        return bool(self._processes)

    def reset(self, observations: Any | None = None) -> None:
        """(Re)start the actor processes: every actor builds its envs and starts new episodes (``observations`` unused)."""
        self.close()
        self._stop = StopFlag(self.context)
        for index in range(self.n_actors):
            reader, writer = self.context.Pipe(duplex=False)
            process = self.context.Process(
                target=_actor_main,
                args=(
                    index,
                    self.factory,
                    self.parameters,
                    writer,
                    self._stop,
                    self.sync_every,
                    self.torch_threads,
                    self.max_pending,
                ),
                name=f"sb3-frontier-actor-{index}",
                daemon=True,
            )
            try:
                process.start()
            except Exception as error:  # spawn/forkserver pickle the factory here
                writer.close()
                reader.close()
                _shutdown(self._processes, self._stop, self._connections, self.shutdown_timeout)
                self._processes, self._connections = [], []
                raise RuntimeError(
                    f"Could not start actor process {index} with start_method={self.context.get_start_method()!r}: "
                    f"{error}. 'spawn' and 'forkserver' pickle the actor factory and its envs (Atari envs do not "
                    "pickle); 'fork' inherits them."
                ) from error
            writer.close()  # the actor holds the only write end: its death reads as the end of the pipe
            self._processes.append(process)
            self._connections.append(reader)
        self._finalizer = weakref.finalize(
            self, _shutdown, self._processes, self._stop, self._connections, self.shutdown_timeout
        )

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _shutdown once
            self._finalizer = None
        self._processes, self._connections = [], []
        self._stop = None

    # ------------------------------------------------------------------------------------------------- transport
    def sync(self, parameters: Mapping[str, th.Tensor] | None, version: int, progress_remaining: float) -> None:
        if parameters is None:
            raise ValueError("Actor processes hold their own network: sync() needs the learner's state dict")
        # An actor killed while it read the parameters holds their lock: report it instead of waiting.
        self.parameters.write(parameters, version, progress_remaining, check=self._check_alive)
        self.version = int(version)

    def step(self) -> list[ActorStep]:
        """The actor steps ready now (waiting for the first one), each tagged with its policy lag in updates."""
        if not self.running:
            raise RuntimeError("The actor processes are not running: reset() the runner first")
        self._check_alive()  # a dead actor is reported even while the others keep sending
        ready: list[Any] = []
        while not ready:
            ready = wait(self._connections, timeout=self.poll_interval)
            if not ready:
                self._check_alive()
        steps = []
        for connection in ready:
            index = self._connections.index(connection)  # type: ignore[arg-type]
            try:
                message = connection.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                self._report_death(index)
            step = self._unpack(message)
            step.stats = {**step.stats, "runner/policy_lag": float(self.version - step.policy_version)}
            steps.append(step)
        return steps

    def _unpack(self, message: tuple[Any, ...]) -> ActorStep:
        kind, index, payload = message
        if kind == "error":
            self.close()
            raise ActorError(f"Actor {index} raised:\n{payload}")
        return payload

    def _check_alive(self) -> None:
        for index, process in enumerate(self._processes):
            if not process.is_alive():
                self._report_death(index)

    def _report_death(self, index: int) -> NoReturn:
        """Raise the traceback the actor sent before it exited, or its exit code."""
        connection, process = self._connections[index], self._processes[index]
        with contextlib.suppress(EOFError, OSError):
            while connection.poll(self.poll_interval):
                message = connection.recv()
                if message[0] == "error":
                    self._unpack(message)
        process.join(self.poll_interval)
        exitcode, pid = process.exitcode, process.pid
        self.close()
        raise ActorError(f"Actor process {index} (pid {pid}) died with exit code {exitcode}")

    @property
    def env_steps_per_step(self) -> int:
        return self.n_envs

    @property
    def pids(self) -> list[int]:
        """Process ids of the running actors."""
        return [p.pid for p in self._processes if p.pid is not None]


__all__ = ["DEFAULT_MAX_PENDING", "ActorError", "ProcessRunner", "SharedParameters", "VecEnvCopy"]

"""The ``sb3-frontier`` command: rl-zoo3's scripts with our algorithms, configs and environments registered.

Examples::

    sb3-frontier train --algo muzero --env CartPole-v1
    sb3-frontier enjoy --algo muzero --env CartPole-v1 -f logs/
    sb3-frontier record-video --algo muzero --env CartPole-v1 -f logs/ -n 1000

``train`` reads ``sb3_frontier/zoo_configs/<algo>.yml`` for our algorithms unless ``-conf/--conf-file`` is given;
every other option is rl-zoo3's own (``sb3-frontier train --help``).

Multi-task ids train on every game of their set at once, one task id per env (:mod:`sb3_frontier.zoo.multitask`);
``n_envs`` must be a multiple of the number of games, and ``enjoy`` plays one game (``--env-kwargs task:k``, default 0)::

    sb3-frontier train --algo popart_impala --env sb3_frontier/MinAtarMultiTask-v0 --eval-episodes 6
    sb3-frontier enjoy --algo popart_impala --env sb3_frontier/MinAtarMultiTask-v0 -f logs/ --env-kwargs task:2
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from sb3_frontier.envs import register_envs
from sb3_frontier.zoo import config_path, register_algorithms
from sb3_frontier.zoo.callbacks import use_mask_aware_evaluation
from sb3_frontier.zoo.multitask import use_multitask_envs

COMMANDS = ("train", "enjoy", "record-video")

USAGE = f"""usage: sb3-frontier {{{",".join(COMMANDS)}}} [rl-zoo3 options]

  train          train an agent (rl-zoo3 train); our algorithms use our zoo configs by default
  enjoy          run a trained agent (rl-zoo3 enjoy)
  record-video   record a video of a trained agent (rl-zoo3 record_video)

'sb3-frontier <command> --help' lists the options of a command.
"""


def _option_value(args: Sequence[str], *names: str) -> str | None:
    """Value of a command-line option given as ``--name value`` or ``--name=value`` (last one wins)."""
    value = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    return value


def with_default_config(args: Sequence[str], ours: Sequence[str]) -> list[str]:
    """
    Add ``--conf-file <our yml>`` to rl-zoo3 train arguments when the algorithm is ours and no config was given.

    :param args: arguments after ``train``
    :param ours: zoo names of our registered algorithms
    :return: the arguments to hand to rl-zoo3
    """
    args = list(args)
    algo = _option_value(args, "--algo")
    has_config = _option_value(args, "-conf", "--conf-file") is not None
    if algo is not None and algo in ours and not has_config:
        args += ["--conf-file", str(config_path(algo))]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """
    Entry point of ``sb3-frontier`` and ``python -m sb3_frontier.zoo``.

    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    :return: exit status
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"sb3-frontier: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2

    register_envs()
    ours = register_algorithms()
    program = f"sb3-frontier {command}"
    if command == "train":
        from rl_zoo3.train import train

        if _option_value(rest, "--algo") in ours:
            use_mask_aware_evaluation()  # the zoo's evaluation passes action masks to our algorithms
        use_multitask_envs()  # a multi-task id gets a VecEnv of all its games
        sys.argv = [program, *with_default_config(rest, list(ours))]
        train()
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        sys.argv = [program, *rest]
        enjoy()
    else:
        sys.argv = [program, *rest]
        runpy.run_module("rl_zoo3.record_video", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

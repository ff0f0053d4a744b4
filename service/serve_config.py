"""``lsr serve`` settings from the environment and a config file, as well as flags.

Precedence: a flag on the command line, then the environment variable ``LSR_<OPTION>``
(``--max-k`` is ``LSR_MAX_K``, ``--api-key`` ``LSR_API_KEY``), then the file given by
``--config`` (YAML or JSON: ``{port: 8080, access_log: json, cors_origin: [...]}``, the
options' names with ``_`` or ``-``), then the default. Values from the environment and the
file pass the same checks as the flags' (a bad one is an error naming where it came from);
an option the file names that ``lsr serve`` does not have is an error too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from lsr.errors import ConfigError

ENV_PREFIX = "LSR_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def apply(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str],
    environ: Mapping[str, str],
) -> None:
    """Fill the options of ``args`` not given in ``argv`` from ``environ`` and the file of
    ``args.config``."""
    actions = {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "config", "verbose", "debug")
    }
    from_file = _read_file(args.config, actions) if args.config else {}
    given = _given(actions.values(), argv)
    for dest, action in actions.items():
        if dest in given:
            continue
        env_name = ENV_PREFIX + dest.upper()
        if environ.get(env_name) not in (None, ""):
            setattr(args, dest, _convert(action, environ[env_name], f"${env_name}"))
        elif dest in from_file:
            source = f"{args.config}: {dest}"
            setattr(args, dest, _convert(action, from_file[dest], source))


def _given(actions, argv: Sequence[str]) -> set[str]:
    """The options that appear on the command line (``--port 1``, ``--port=1``, or a
    prefix argparse takes for the option, such as ``--flush 5``)."""
    owner = {option: action.dest for action in actions for option in action.option_strings}
    given = set()
    for token in argv:
        name = token.split("=", 1)[0]
        if not name.startswith("--"):
            continue
        matches = [name] if name in owner else [o for o in owner if o.startswith(name)]
        if len({owner[o] for o in matches}) == 1:
            given.add(owner[matches[0]])
    return given


def _read_file(path: str, actions: dict) -> dict:
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"--config {file}: cannot read it ({e.strerror}).") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {file}: not valid YAML or JSON ({e}).") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {file}: expected a mapping of option names to values.")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigError(
            f"--config {file}: lsr serve has no option {', '.join(unknown)} "
            f"(options: {', '.join(sorted(actions))})."
        )
    return values


def _convert(action: argparse.Action, value, source: str):
    """``value`` (text from the environment, or a YAML value) checked as the flag would be."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ConfigError(f"{source}: expected true or false, got {value!r}.")
        on = text in _TRUE
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
        return [_one(action, item, source) for item in items]
    return _one(action, value, source)


def _one(action: argparse.Action, value, source: str):
    if value is None or isinstance(value, (dict, list)):
        raise ConfigError(f"{source}: expected a single value, got {value!r}.")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        converted = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}.") from e
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{source}: must be one of {choices}, got {value!r}.")
    return converted

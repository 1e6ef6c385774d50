"""Recipes (algorithms) and suites: TOML files loaded into frozen, validated configs.

A **recipe** names its loop and parts, each a table with a ``name`` (a registered part) and that
part's settings::

    description = "Soft actor-critic"
    [loop]
    name = "policy"
    initial_random_steps = 5000
    [optimizer]
    name = "sac"
    hidden_sizes = [256, 256]
    [overrides."Hopper-v5".optimizer]       # per-environment overrides (gymnasium id)
    updates_per_step = 20

``base = "other-recipe"`` starts from another recipe and overrides it (tables merge key by key;
a part table that names another part, e.g. another planner, replaces the base's table).
``drop = ["model", "rollout"]`` removes parts the base has (with the base's per-task settings
for them), e.g. MBPO without its model. Command-line settings (``bench run --set
rollout.k=5``, :mod:`mbrl_bench.sweep`) are applied last; :func:`resolve_recipe` also says
where each setting came from (``bench show``).

A **suite** names environments with their budgets, evaluation schedule and reporting budgets,
the default algorithms and seeds::

    description = "Classic control"
    algorithms = ["sac"]
    seeds = [0, 1, 2]
    [[envs]]
    id = "Pendulum-v1"
    budget = 20000
    eval_every = 1000
    reporting_budgets = [10000, 20000]
    threshold = -200.0

Everything is checked when loaded, before any run starts; an error names the file, the key and
what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from mbrl_bench import envs as _envs  # noqa: F401  (registers our own environments)
from mbrl_bench.config import build, check, deep_merge, load_toml, stable_hash, to_dict
from mbrl_bench.envs import make as _make  # noqa: F401
from mbrl_bench.errors import ConfigError
from mbrl_bench.parts import LOOPS, PART_KINDS, registry_for
from mbrl_bench.sweep import Settings

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def data_dir(kind: str) -> Path:
    """Folder of the recipes (``algorithms``) or suites (``suites``) shipped with the package."""
    return Path(str(resources.files("mbrl_bench") / "data" / kind))


def find_file(name_or_path: str, kind: str, extra_dirs: tuple[Path, ...] = ()) -> Path:
    """Resolve a recipe or suite given by name (searched in ``extra_dirs``, then the packaged
    folder) or by path to a ``.toml`` file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(name_or_path, "", f"no such {kind[:-1]} file")
        return p
    for d in (*extra_dirs, data_dir(kind)):
        candidate = d / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available(kind, extra_dirs))
    raise ConfigError(name_or_path, "", f"unknown {kind[:-1]}; known: {known}")


def available(kind: str, extra_dirs: tuple[Path, ...] = ()) -> list[str]:
    """Names of the recipes or suites found in ``extra_dirs`` and the packaged folder."""
    names: set[str] = set()
    for d in (*extra_dirs, data_dir(kind)):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


# ----------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class EnvEntry:
    """One environment of a suite."""

    id: str
    """gymnasium id, e.g. ``Hopper-v5``."""
    budget: int
    """Environment steps of training."""
    eval_every: int
    """Evaluate the deterministic policy every this many environment steps."""
    name: str = ""
    """Label of this entry in results (default: the id); distinguishes entries of one id."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``gymnasium.make``."""
    eval_episodes: int = 10
    """Episodes per evaluation, on a separate evaluation environment."""
    reporting_budgets: tuple[int, ...] = ()
    """Budgets at which ``bench table`` reports returns (default: the budget)."""
    threshold: float | None = None
    """Return threshold for steps-to-threshold in the table (with ``optimal_length``, the
    optimal return of one episode)."""
    added_later: ClassVar[tuple[str, ...]] = ("optimal_length",)
    """Fields left out of run hashes while at their default (see :func:`hashed_form`)."""
    optimal_length: int | None = None
    """Length of a shortest successful episode, for deterministic tabular tasks with one start:
    ``bench episodes`` counts an episode as optimal when it is at most this long and its
    return reaches ``threshold`` (if set)."""
    initial_random_steps: int | None = None
    """Replaces the recipe loop's `initial_random_steps` for this task (applied at expansion)."""

    def __post_init__(self) -> None:
        check(self.id in gym.registry, "id", f"a registered gymnasium id; {self.id!r} is unknown")
        check(self.budget > 0, "budget", "a positive number of environment steps")
        check(0 < self.eval_every <= self.budget, "eval_every", "in 1..budget")
        check(self.eval_episodes > 0, "eval_episodes", "a positive integer")
        check(all(0 < b <= self.budget for b in self.reporting_budgets), "reporting_budgets",
              "budgets in 1..budget")
        check(list(self.reporting_budgets) == sorted(set(self.reporting_budgets)),
              "reporting_budgets", "increasing budgets without repeats")
        check(self.initial_random_steps is None or self.initial_random_steps >= 0,
              "initial_random_steps", "a non-negative integer")
        check(self.optimal_length is None or self.optimal_length > 0, "optimal_length",
              "a positive number of steps")
        check(self.name == "" or bool(_NAME_RE.match(self.name)), "name",
              "letters, digits, '.', '_' or '-'")

    @property
    def label(self) -> str:
        """Name used in run ids and result folders."""
        return self.name or self.id.replace("/", "_")

    @property
    def budgets(self) -> tuple[int, ...]:
        return self.reporting_budgets or (self.budget,)

    def with_budget(self, steps: int) -> EnvEntry:
        """This entry at a budget of ``steps`` (``bench run --steps``): evaluated every
        ``min(eval_every, steps)`` steps, reporting at its budgets up to ``steps``."""
        return replace(self, budget=steps, eval_every=min(self.eval_every, steps),
                       reporting_budgets=tuple(b for b in self.reporting_budgets if b <= steps))


@dataclass(frozen=True)
class Suite:
    """Environments, budgets, evaluation schedule, default algorithms and seeds."""

    name: str
    description: str
    envs: tuple[EnvEntry, ...]
    algorithms: tuple[str, ...] = ()
    """Recipes run when ``--algos`` is not given."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds run when ``--seeds`` is not given."""
    device: str = "auto"
    """Where the runs compute when ``--device`` is not given: auto, cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check(len(self.envs) > 0, "envs", "at least one [[envs]] entry")
        check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, "device",
              "auto, cpu, cuda or cuda:N")
        labels = [e.label for e in self.envs]
        check(len(labels) == len(set(labels)), "envs", "distinct names (set `name` to tell "
              "entries of the same id apart)")
        check(len(self.seeds) > 0 and min(self.seeds) >= 0, "seeds", "non-negative seeds")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds (a repeated "
              "seed would run into the same folder)")


def load_suite(name_or_path: str, extra_dirs: tuple[Path, ...] = ()) -> Suite:
    """Load and validate a suite by name or path."""
    path = find_file(name_or_path, "suites", extra_dirs)
    data = load_toml(path)
    if "name" in data:
        raise ConfigError(str(path), "name", "unknown key; a suite is named by its file name")
    return build(Suite, {**data, "name": path.stem}, str(path))


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Part:
    """One part of a resolved recipe: its kind (``loop``, ``optimizer``, …), name and config."""

    kind: str
    name: str
    config: Any


@dataclass(frozen=True)
class Recipe:
    """A recipe resolved for one environment: its parts with validated configs."""

    name: str
    description: str
    parts: tuple[Part, ...]
    source: str

    def part(self, kind: str) -> Part | None:
        for p in self.parts:
            if p.kind == kind:
                return p
        return None

    def config(self, kind: str) -> Any:
        p = self.part(kind)
        if p is None:
            raise KeyError(f"recipe {self.name!r} has no {kind}")
        return p.config

    def with_config(self, kind: str, config: Any) -> Recipe:
        """A copy with the config of part ``kind`` replaced (used for suite-level overrides)."""
        parts = tuple(replace(p, config=config) if p.kind == kind else p for p in self.parts)
        return replace(self, parts=parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parts": {p.kind: {"name": p.name, **to_dict(p.config)} for p in self.parts},
        }


_TOP_KEYS = {"description", "base", "drop", "overrides", "sources", *PART_KINDS}


def _read_recipe_file(
    name_or_path: str, extra_dirs: tuple[Path, ...], seen: tuple[str, ...]
) -> tuple[dict[str, Any], Path]:
    path = find_file(name_or_path, "algorithms", extra_dirs)
    if str(path.resolve()) in seen:
        raise ConfigError(str(path), "base", "recipes form a cycle of bases")
    data = load_toml(path)
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(str(path), key,
                              f"unknown key; expected one of: {', '.join(sorted(_TOP_KEYS))}")
    overrides = data.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise ConfigError(str(path), "overrides", "expected a table of environment ids")
    for oid, odata in overrides.items():
        where = f"overrides.{oid}"
        if oid not in gym.registry:
            raise ConfigError(str(path), where, "not a registered gymnasium id")
        if not isinstance(odata, Mapping) or any(k not in PART_KINDS for k in odata):
            raise ConfigError(str(path), where,
                              f"expected tables among: {', '.join(PART_KINDS)}")
    if "base" in data and not isinstance(data["base"], str):
        raise ConfigError(str(path), "base", f"expected a recipe name, got {data['base']!r}")
    _check_drop(data, overrides, str(path))
    _check_sources(data, str(path))
    return data, path


def written_keys(data: Mapping[str, Any]) -> list[str]:
    """The settings a recipe file writes, as ``kind.field`` (its own tables) and
    ``overrides.ENV.kind.field`` (its per-task tables); part names excluded."""
    keys = [f"{kind}.{k}" for kind in PART_KINDS if isinstance(data.get(kind), Mapping)
            for k in data[kind] if k != "name"]
    for oid, odata in data.get("overrides", {}).items():
        keys += [f"overrides.{oid}.{kind}.{k}" for kind, table in odata.items()
                 if isinstance(table, Mapping) for k in table if k != "name"]
    return keys


def _check_sources(data: Mapping[str, Any], source: str) -> None:
    """``[sources]`` maps settings this file writes (:func:`written_keys`) to where their
    values come from (a file and line of public code, a paper's table, or ``ours: why``)."""
    cites = data.get("sources", {})
    if not isinstance(cites, Mapping):
        raise ConfigError(source, "sources", "expected a table of setting = \"where from\"")
    keys = set(written_keys(data))
    for key, text in cites.items():
        if key not in keys:
            raise ConfigError(source, f"sources.{key}", "names no setting this file writes "
                              "(keys look like \"loop.horizon\" or "
                              "\"overrides.Hopper-v5.rollout.k_schedule\")")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(source, f"sources.{key}", "expected a non-empty string")


def citations(sources: Sources, extra_dirs: tuple[Path, ...] = ()) -> dict[str, dict[str, str]]:
    """Where each file-given setting of a resolved recipe comes from: part kind → field → the
    citation in the ``[sources]`` table of the file (and per-task table) that set its value,
    from the ``sources`` that :func:`resolve_recipe` returns; ``--set`` values cite the
    command line; fields without a citation are left out."""
    out: dict[str, dict[str, str]] = {}
    files: dict[str, Mapping[str, Any]] = {}
    for kind, fields_ in sources.items():
        for field_name, label in fields_.items():
            if label == "--set":
                out.setdefault(kind, {})[field_name] = "the command line (--set)"
                continue
            stem, key = label, f"{kind}.{field_name}"
            if label.startswith("override "):
                env, _, stem = label.removeprefix("override ").rpartition(" in ")
                key = f"overrides.{env}.{key}"
            if stem not in files:
                try:
                    files[stem] = load_toml(find_file(stem, "algorithms", extra_dirs)).get(
                        "sources", {})
                except ConfigError:
                    files[stem] = {}
            if key in files[stem]:
                out.setdefault(kind, {})[field_name] = str(files[stem][key])
    return out


def _check_drop(data: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> None:
    """``drop`` lists part kinds of the base (never the loop) that this recipe does not set."""
    drop = data.get("drop", [])
    if not isinstance(drop, list) or any(k not in PART_KINDS or k == "loop" for k in drop):
        raise ConfigError(source, "drop", "a list of part kinds among: "
                          f"{', '.join(k for k in PART_KINDS if k != 'loop')}")
    if drop and "base" not in data:
        raise ConfigError(source, "drop", "only a recipe with a `base` can drop its parts")
    for kind in drop:
        if kind in data or any(kind in o for o in overrides.values()):
            raise ConfigError(source, kind, "this recipe drops it (`drop`) and sets it")


Sources = dict[str, dict[str, str]]
"""Where the settings of a resolved recipe came from: part kind → key (``name`` or a field) →
the recipe file that set it (its name), ``override ENV in NAME`` (a per-task table) or
``--set``. A field that is not listed has its dataclass default."""


@dataclass(frozen=True)
class _Resolved:
    """A recipe's part tables for one environment, with what :func:`_resolve` learnt on the
    way."""

    data: dict[str, Any]
    path: Path
    ids: set[str]
    """Every env id that any level overrides."""
    description: Any
    sources: Sources


def _resolve(
    name_or_path: str, env_id: str | None, extra_dirs: tuple[Path, ...],
    seen: tuple[str, ...] = (),
) -> _Resolved:
    """The recipe's part tables for ``env_id``, its file, every env id that any level overrides,
    its own ``description`` and where each setting came from.

    Each level is resolved for the environment before the next merges over it: base (with its
    overrides for ``env_id``), then this file's top-level tables, then this file's overrides
    for ``env_id``. So an ablation's settings beat its base's per-task values, and its own
    per-task values beat both.
    """
    raw, path = _read_recipe_file(name_or_path, extra_dirs, seen)
    overrides: Mapping[str, Any] = raw.get("overrides", {})
    own = {k: v for k, v in raw.items() if k not in ("base", "drop", "overrides", "description")}
    ids = set(overrides)
    data: dict[str, Any] = {}
    sources: Sources = {}
    if "base" in raw:
        try:
            find_file(raw["base"], "algorithms", (path.parent, *extra_dirs))
        except ConfigError as e:
            raise ConfigError(str(path), "base", f"no recipe {raw['base']!r} "
                              f"({e.detail})") from e
        base = _resolve(raw["base"], env_id, (path.parent, *extra_dirs),
                        (*seen, str(path.resolve())))
        data, sources = base.data, base.sources
        ids |= base.ids
        for kind in raw.get("drop", []):
            if kind not in data:
                raise ConfigError(str(path), "drop", f"the base recipe has no {kind} to drop")
            del data[kind]
            sources.pop(kind, None)
    data, sources = _merge_level(data, own, sources, path.stem)
    if env_id is not None and env_id in overrides:
        data, sources = _merge_level(data, overrides[env_id], sources,
                                     f"override {env_id} in {path.stem}")
    return _Resolved(data, path, ids, raw.get("description", ""), sources)


def _merge_level(
    base: Mapping[str, Any], top: Mapping[str, Any], sources: Sources | None = None,
    label: str = "",
) -> tuple[dict[str, Any], Sources]:
    """``deep_merge``, except that a part table naming another part than the base's, with
    settings of another kind (e.g. an ablation's ``[planner] name = "mppi"`` over a CEM base),
    replaces it: the base's settings, per-task ones included, belong to the other part. Parts
    that share one settings class (the ``pe`` and ``deterministic`` models) merge as usual.

    Also returns ``sources`` (the base's) updated: every key of ``top`` came from ``label``,
    and a replaced table's keys no longer come from the base.
    """
    def renamed(kind: str) -> bool:
        b, t = base.get(kind), top.get(kind)
        if not (isinstance(b, Mapping) and isinstance(t, Mapping) and "name" in t
                and t["name"] != b.get("name") and kind in PART_KINDS):
            return False
        reg = registry_for(kind)
        if t["name"] not in reg or b.get("name") not in reg:
            return True  # an unknown name is reported when the part is built
        return reg.get(t["name"]).config_cls is not reg.get(str(b["name"])).config_cls

    replaced = {k for k in base if renamed(k)}
    merged = deep_merge({k: v for k, v in base.items() if k not in replaced}, top)
    out: Sources = {k: dict(v) for k, v in (sources or {}).items() if k not in replaced}
    for kind, table in top.items():
        keys = dict.fromkeys(table, label) if isinstance(table, Mapping) else None
        out[kind] = {} if keys is None else {**out.get(kind, {}), **keys}
    return merged, out


def _build_part(kind: str, table: Any, source: str) -> Part:
    if not isinstance(table, Mapping):
        raise ConfigError(source, kind, "expected a table with a `name` and settings")
    settings = dict(table)
    name = settings.pop("name", None)
    reg = registry_for(kind)
    if not isinstance(name, str):
        raise ConfigError(source, f"{kind}.name",
                          f"missing; expected one of: {', '.join(reg.names())}")
    if name not in reg:
        raise ConfigError(source, f"{kind}.name", f"unknown {reg.kind} {name!r}; expected one of: "
                          f"{', '.join(reg.names()) or '(none registered yet)'}")
    entry = reg.get(name)
    return Part(kind, name, build(entry.config_cls, settings, source, prefix=f"{kind}."))


def load_recipe(
    name_or_path: str, env_id: str | None = None, extra_dirs: tuple[Path, ...] = (),
    settings: Settings = (),
) -> Recipe:
    """Load a recipe, resolved for ``env_id`` (per-environment overrides applied) if given,
    with command-line ``settings`` (``--set``) applied last.

    The recipe is also resolved for every environment any level overrides, so a bad override
    fails at load whichever environment is run.
    """
    return resolve_recipe(name_or_path, env_id, extra_dirs, settings)[0]


def resolve_recipe(
    name_or_path: str, env_id: str | None = None, extra_dirs: tuple[Path, ...] = (),
    settings: Settings = (),
) -> tuple[Recipe, Sources]:
    """:func:`load_recipe`, and where each of its settings came from."""
    r = _resolve(name_or_path, env_id, extra_dirs)
    if not isinstance(r.description, str):
        raise ConfigError(str(r.path), "description", "expected a string")
    parts = _parts(r.data, str(r.path))
    for oid in sorted(r.ids - {env_id}):
        try:
            _parts(_resolve(name_or_path, oid, extra_dirs).data, str(r.path))
        except ConfigError as e:
            if e.source != str(r.path) or e.key.startswith("overrides."):
                raise
            raise ConfigError(e.source, f"overrides.{oid}.{e.key}", e.detail) from e
    recipe = Recipe(r.path.stem, r.description, parts, str(r.path))
    LOOPS.get(recipe.parts[0].name).factory.check_recipe(recipe)
    if not settings:
        return recipe, r.sources
    recipe, sources = _apply_settings(recipe, r.data, r.sources, settings)
    LOOPS.get(recipe.parts[0].name).factory.check_recipe(recipe)  # settings fit together too
    return recipe, sources


def _apply_settings(
    recipe: Recipe, data: Mapping[str, Any], sources: Sources, settings: Settings
) -> tuple[Recipe, Sources]:
    """``recipe`` with ``settings`` merged over its part tables ``data``, each changed part
    built again exactly like a file's table; errors name the ``--set`` option."""
    by_kind: dict[str, dict[str, Any]] = {}
    for key, value in settings:
        kind, _, field_name = key.partition(".")
        if recipe.part(kind) is None:
            have = ", ".join(p.kind for p in recipe.parts)
            raise ConfigError(f"--set {key}", "", f"recipe {recipe.name!r} has no {kind} "
                              f"(it has: {have})")
        by_kind.setdefault(kind, {})[field_name] = value
    out = {k: dict(v) for k, v in sources.items()}
    for part in recipe.parts:
        values = by_kind.get(part.kind)
        if values is None:
            continue
        table = deep_merge({k: v for k, v in data[part.kind].items() if k != "name"}, values)
        cls = registry_for(part.kind).get(part.name).config_cls
        try:
            config: Any = build(cls, table, "--set", prefix=f"{part.kind}.")
        except ConfigError as e:
            key = e.key if e.key != part.kind else ", ".join(f"{part.kind}.{n}" for n in values)
            raise ConfigError(f"--set {key}", "", e.detail) from e
        recipe = recipe.with_config(part.kind, config)
        out.setdefault(part.kind, {}).update(dict.fromkeys(values, "--set"))
    return recipe, out


def _parts(data: dict[str, Any], source: str) -> tuple[Part, ...]:
    if "loop" not in data:
        raise ConfigError(source, "loop", "missing; every recipe names its loop")
    return tuple(_build_part(kind, data[kind], source) for kind in PART_KINDS if kind in data)


def hashed_form(config: Any) -> dict[str, Any]:
    """The plain form of a config dataclass that enters a run's hash.

    A field added after runs were made is listed in its class's ``added_later``; it is left
    out while it has its default, so the runs made before it keep their hash (and resume),
    and setting it to another value still makes a new configuration.
    """
    data = to_dict(config)
    defaults = {f.name: f.default for f in fields(config)}
    for name in getattr(type(config), "added_later", ()):
        if getattr(config, name) == defaults[name]:
            data.pop(name)
    return data


def recipe_hash(recipe: Recipe, entry: EnvEntry, seed: int) -> str:
    """Hash identifying a run's resolved configuration (recipe, environment entry, seed)."""
    parts = {p.kind: {"name": p.name, **hashed_form(p.config)} for p in recipe.parts}
    recipe_form = {"name": recipe.name, "description": recipe.description, "parts": parts}
    return stable_hash({"recipe": recipe_form, "env": hashed_form(entry), "seed": seed})

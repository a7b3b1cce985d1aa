"""Evolutionary and random search for the best sub-network under cost budgets.

The evolutionary search is the once-for-all one (``ofa/nas/search_algorithm/evolution.py``), with its settings
as defaults: a population of 100 valid sub-networks; each generation keeps the best 25% as parents and breeds
the rest anew, half by mutation (each gene - a depth or width slot, a block slot's kernel and expand together -
redrawn with probability 0.1, the resolution with 0.5) and half by uniform crossover of two parents; 500
generations. A budget is a dict of limits, ``{"macs": 3e8, "latency": 15.0}``: a child that breaks any of them
is rejected and drawn again, at most ``max_tries`` times (then that child is left out of the generation).

Two changes from the reference, neither costing an evaluation: a child equal to a member of the population
(the same network: blocks that depth switches off do not count) is drawn again rather than scored twice, so
the 100 evaluations of a generation are 100 distinct networks; and the children of the last generation are
candidates too (the reference scores them but never looks at them). ``tests/test_search_evolution.py``
compares both with the reference's finder at an equal number of evaluations.

Everything is seeded (``numpy.random.default_rng(seed)``): the same call gives the same result. Accuracy
comes from an *objective*: an :class:`~.predictor.AccuracyPredictor` (scored a whole generation per forward)
or any callable ``list[SubnetConfig] -> scores`` (higher is better). Costs are callables ``SubnetConfig ->
float`` keyed by name (:mod:`.costs`); each distinct network's costs are computed once per call.

    results = search(space, predictor, costs, [{"macs": 3e8}, {"macs": 6e8, "latency": 20.0}], seed=0)
    results[0].config, results[0].score, results[0].costs
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..elastic.space import SearchSpace, SubnetConfig
from ..errors import ConfigError
from ..options import check_range
from .encoding import GeneLayout

Objective = Callable[[Sequence[SubnetConfig]], Sequence[float]]
CostFn = Callable[[SubnetConfig], float]


@dataclass
class SearchResult:
    """The best sub-network found for one budget.

    Attributes:
        budget: the limits, ``{cost name: limit}``.
        config: the sub-network (block slots that depth switches off at their largest choice).
        score: its objective value (predicted accuracy).
        costs: its value of every cost given to the search.
        history: the best score after each generation (random search: after each batch).
        evaluations: objective evaluations spent (the initial population included).
    """

    budget: dict[str, float]
    config: SubnetConfig
    score: float
    costs: dict[str, float]
    history: list[float] = field(default_factory=list)
    evaluations: int = 0


@dataclass(frozen=True)
class EvolutionSettings:
    """The once-for-all settings (see the module doc)."""

    population: int = 100
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    resolution_mutate_prob: float = 0.5
    generations: int = 500
    max_tries: int = 100

    def __post_init__(self) -> None:
        check_range("population", self.population, 2)
        check_range("parent_ratio", self.parent_ratio, 0, 1, lo_open=True)
        check_range("mutation_ratio", self.mutation_ratio, 0, 1)
        check_range("mutate_prob", self.mutate_prob, 0, 1)
        check_range("resolution_mutate_prob", self.resolution_mutate_prob, 0, 1)
        check_range("generations", self.generations, 0)
        check_range("max_tries", self.max_tries, 1)


# ------------------------------------------------------------------------------------ the problem
class _Problem:
    """Genes, the objective and the costs of one search call, with each network's costs computed once."""

    def __init__(self, space: SearchSpace, objective: Objective | Any, costs: Mapping[str, CostFn]) -> None:
        self.space = space
        self.layout = GeneLayout(space)
        self.objective = objective
        self.names = list(costs)
        self.costs = [costs[k] for k in self.names]
        # costs that price whole rows of genes at once (the part sums of the OFA MobileNets): no cache needed
        self._gene_costs = [c.for_genes(self.layout) if hasattr(c, "for_genes") else None for c in self.costs]
        self._cost_cache: dict[bytes, np.ndarray] = {}
        self.evaluations = 0
        fast = getattr(objective, "predict_genes", None)
        layout = getattr(objective, "layout", None)
        self._score_genes = fast if fast is not None and getattr(layout, "space", None) == space else None
        # mutation units: the resolution; each depth and width slot; each block slot (kernel and expand together)
        unit_of, units = [], {}
        for g in self.layout.genes:
            key = ("block", g.slot) if g.field in ("kernel", "expand") else (g.field, g.slot)
            unit_of.append(units.setdefault(key, len(units)))
        self.unit_of = np.array(unit_of)
        self.unit_is_resolution = np.array([k[0] == "resolution" for k in units])

    def keys(self, genes: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """The canonical genes (switched-off blocks at their largest choice) and one key per network."""
        canon = self.layout.canonical(genes.copy())
        return canon, [row.tobytes() for row in canon]

    def cost_rows(self, canon: np.ndarray, keys: Sequence[bytes]) -> np.ndarray:
        """``(N, number of costs)`` of canonical genes."""
        if not keys:
            return np.empty((0, len(self.costs)))
        if all(f is not None for f in self._gene_costs):
            active = self.layout.active(canon)  # shared by every cost
            return np.stack([f(canon, active) for f in self._gene_costs], axis=1)  # type: ignore[misc]
        missing = {key: i for i, key in enumerate(keys) if key not in self._cost_cache}
        if missing:
            cfgs = self.layout.to_configs(canon[list(missing.values())])
            for key, cfg in zip(missing, cfgs):
                self._cost_cache[key] = np.array([float(c(cfg)) for c in self.costs])
        return np.stack([self._cost_cache[key] for key in keys])

    def score(self, genes: np.ndarray) -> np.ndarray:
        self.evaluations += len(genes)
        if len(genes) == 0:
            return np.empty(0)
        if self._score_genes is not None:
            return np.asarray(self._score_genes(genes), dtype=np.float64)
        cfgs = self.layout.to_configs(self.layout.canonical(genes.copy()))
        return np.asarray(self.objective(cfgs), dtype=np.float64).reshape(len(cfgs))

    def limits(self, budget: Mapping[str, float]) -> np.ndarray:
        """The budget as one limit per cost (``inf`` where it sets none)."""
        unknown = [k for k in budget if k not in self.names]
        if unknown:
            raise ConfigError(f"budget on {unknown[0]!r}, which is not a cost given to the search; the costs are: "
                              f"{', '.join(self.names) or 'none'}")
        for k, v in budget.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v <= 0:
                raise ConfigError(f"budget {k} <= {v!r}: a limit must be a positive number")
        return np.array([float(budget.get(k, math.inf)) for k in self.names])

    def check_reachable(self, budget: Mapping[str, float], limits: np.ndarray) -> np.ndarray:
        """The genes of the smallest sub-network; raise if it breaks the budget (nothing smaller exists)."""
        smallest = self.layout.to_genes([self.space.min()])
        cost = self.cost_rows(*self.keys(smallest))[0]
        broken = [(k, c, lim) for k, c, lim in zip(self.names, cost, limits) if c > lim]
        if broken:
            k, c, lim = broken[0]
            raise ConfigError(f"budget {k} <= {lim:g} cannot be met: the smallest sub-network of {self.space.name} "
                              f"costs {k} = {c:g}")
        return smallest

    def draw(self, rng: np.random.Generator, n: int, make: Callable[[int], np.ndarray], limits: np.ndarray,
             taken: set[bytes], max_tries: int) -> np.ndarray:
        """Up to ``n`` rows from ``make(k)`` (k candidates at a time) that meet ``limits`` and whose networks are not
        in ``taken`` (which grows), each drawn at most ``max_tries`` times."""
        rows: list[np.ndarray] = []
        for _ in range(max_tries):
            need = n - len(rows)
            if need <= 0:
                break
            cand = make(need)
            canon, keys = self.keys(cand)
            ok = np.all(self.cost_rows(canon, keys) <= limits, axis=1)
            for row, key, good in zip(cand, keys, ok):
                if good and key not in taken:
                    taken.add(key)
                    rows.append(row)
        return np.array(rows, dtype=np.int64).reshape(len(rows), self.layout.num_genes)

    def result(self, budget: Mapping[str, float], genes: np.ndarray, scores: np.ndarray,
               history: list[float], evaluations: int) -> SearchResult:
        best = int(np.argmax(scores))  # first of equals: the earliest found
        row, keys = self.keys(genes[best:best + 1])
        costs = self.cost_rows(row, keys)[0]
        return SearchResult(dict(budget), self.layout.to_config(row[0]), float(scores[best]),
                            dict(zip(self.names, map(float, costs))), history, evaluations)


# ---------------------------------------------------------------------------------------- searches
def _initial(problem: _Problem, rng: np.random.Generator, n: int, limits: np.ndarray, max_tries: int,
             smallest: np.ndarray, taken: set[bytes]) -> np.ndarray:
    layout = problem.layout
    pop = problem.draw(rng, n, lambda k: layout.random(rng, k), limits, taken, max_tries)
    if len(pop) < n:  # a tight budget: random networks rarely meet it; grow the rest from the smallest one
        seeds = np.concatenate([pop, smallest]) if len(pop) else smallest
        mutate = _mutator(problem, rng, seeds, 0.5, 0.5)
        pop = np.concatenate([pop, problem.draw(rng, n - len(pop), mutate, limits, taken, max_tries)])
    return pop


def _mutator(problem: _Problem, rng: np.random.Generator, parents: np.ndarray, prob: float,
             resolution_prob: float) -> Callable[[int], np.ndarray]:
    unit_prob = np.where(problem.unit_is_resolution, resolution_prob, prob)

    def make(k: int) -> np.ndarray:
        child = parents[rng.integers(len(parents), size=k)].copy()
        hit = (rng.random((k, len(unit_prob))) < unit_prob)[:, problem.unit_of]
        fresh = problem.layout.random(rng, k)
        child[hit] = fresh[hit]
        return child

    return make


def _crosser(rng: np.random.Generator, parents: np.ndarray) -> Callable[[int], np.ndarray]:
    def make(k: int) -> np.ndarray:
        a = parents[rng.integers(len(parents), size=k)]
        b = parents[rng.integers(len(parents), size=k)]
        return np.where(rng.random(a.shape) < 0.5, a, b)

    return make


def _evolve(problem: _Problem, budget: Mapping[str, float], settings: EvolutionSettings, seed: int,
            progress: bool, desc: str) -> SearchResult:
    from tqdm.auto import tqdm

    s = settings
    limits = problem.limits(budget)
    smallest = problem.check_reachable(budget, limits)
    rng = np.random.default_rng(seed)
    start = problem.evaluations
    n_parents = max(1, int(round(s.parent_ratio * s.population)))
    n_mutate = int(round(s.mutation_ratio * s.population))
    taken: set[bytes] = set()
    genes = _initial(problem, rng, s.population, limits, s.max_tries, smallest, taken)
    scores = problem.score(genes)
    history = []
    for _ in tqdm(range(s.generations), desc=desc, unit="gen", disable=not progress, file=sys.stderr, leave=False):
        top = np.argsort(-scores, kind="stable")[:n_parents]
        parents, parent_scores = genes[top], scores[top]
        history.append(float(parent_scores[0]))
        taken = set(problem.keys(parents)[1])  # the population; children must differ from it and from each other
        mutated = problem.draw(rng, n_mutate, _mutator(problem, rng, parents, s.mutate_prob, s.resolution_mutate_prob),
                               limits, taken, s.max_tries)
        crossed = problem.draw(rng, s.population - n_mutate, _crosser(rng, parents), limits, taken, s.max_tries)
        children = np.concatenate([mutated, crossed])
        genes = np.concatenate([parents, children])
        scores = np.concatenate([parent_scores, problem.score(children)])
    history.append(float(scores.max()))
    return problem.result(budget, genes, scores, history, problem.evaluations - start)


def _random(problem: _Problem, budget: Mapping[str, float], evaluations: int, seed: int, max_tries: int,
            batch: int = 100) -> SearchResult:
    limits = problem.limits(budget)
    smallest = problem.check_reachable(budget, limits)
    rng = np.random.default_rng(seed)
    start = problem.evaluations
    taken: set[bytes] = set()
    genes, scores, history = [], [], []
    while sum(map(len, genes)) < evaluations:
        k = min(batch, evaluations - sum(map(len, genes)))
        rows = problem.draw(rng, k, lambda n: problem.layout.random(rng, n), limits, taken, max_tries)
        if len(rows) == 0:
            break
        genes.append(rows)
        scores.append(problem.score(rows))
        history.append(float(max(map(np.max, scores))))
    if not genes:  # no random network met the budget in max_tries draws: the smallest one does
        genes, scores = [smallest], [problem.score(smallest)]
        history.append(float(scores[0][0]))
    return problem.result(budget, np.concatenate(genes), np.concatenate(scores), history,
                          problem.evaluations - start)


def search(space: SearchSpace, objective: Objective | Any, costs: Mapping[str, CostFn],
           budgets: Mapping[str, float] | Sequence[Mapping[str, float]], *, method: str = "evolution",
           seed: int = 0, evaluations: int | None = None, progress: bool = False,
           **settings: Any) -> list[SearchResult]:
    """The best sub-network of ``space`` for each budget (see the module doc).

    Args:
        space: the search space (e.g. ``supernet.space``).
        objective: an :class:`~.predictor.AccuracyPredictor` or a callable ``list[SubnetConfig] -> scores``.
        costs: ``{name: callable(cfg) -> float}``; a budget may limit any of them, and every result reports all.
        budgets: one budget ``{name: limit}`` or a list of them; each is searched with the same ``seed``.
        method: ``"evolution"`` or ``"random"`` (the baseline: that many distinct valid random networks).
        evaluations: for ``"random"``, how many networks to score (default: as many as evolution would).
        settings: :class:`EvolutionSettings` fields (``generations=500``, ``population=100`` ...).
    """
    if method not in ("evolution", "random"):
        raise ConfigError(f"unknown search method {method!r}; the methods are: evolution, random")
    valid = {f for f in EvolutionSettings.__dataclass_fields__}
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise ConfigError(f"unknown search setting {unknown[0]!r}; the settings are: {', '.join(sorted(valid))}")
    s = EvolutionSettings(**settings)
    check_range("seed", seed, 0)
    budgets = [budgets] if isinstance(budgets, Mapping) else list(budgets)
    if not budgets:
        raise ConfigError("no budget to search for")
    problem = _Problem(space, objective, costs)
    for b in budgets:  # every budget checked before any search runs
        problem.check_reachable(b, problem.limits(b))
    if evaluations is None:
        evaluations = s.population * (s.generations + 1)
    check_range("evaluations", evaluations, 1)
    results = []
    for b in budgets:
        desc = "search " + ", ".join(f"{k}<={v:g}" for k, v in b.items())
        if method == "evolution":
            results.append(_evolve(problem, b, s, seed, progress, desc))
        else:
            results.append(_random(problem, b, evaluations, seed, s.max_tries))
    return results

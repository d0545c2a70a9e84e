"""Probabilistic record linkage on traits: Fellegi-Sunter with EM-estimated weights.

A record's traits (name, date of birth, address, postcode) are normalised, turned into
blocking keys (which stored records are worth comparing with at all), and compared field
by field into agreement levels. Each level has an m probability (seen among true matches)
and a u probability (seen among non-matches); a pair's match probability combines them
with the prior share of matches among compared pairs. :func:`fit_em` estimates m, u and
the prior from unlabelled candidate pairs (expectation-maximisation), which is how the
model is trained on a deployment's own data.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import jellyfish
import numpy as np
from numpy.typing import NDArray

# Fields and their number of agreement levels (0 = disagree, highest = exact).
FIELDS: tuple[tuple[str, int], ...] = (
    ("given_name", 4),
    ("family_name", 4),
    ("birth_date", 3),
    ("street_number", 2),
    ("street", 3),
    ("locality", 3),
    ("postal_code", 3),
)
MISSING = -1


def _clean(value: str) -> str:
    value = unicodedata.normalize("NFKD", value)
    value = "".join(c for c in value if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", " ", value).strip()


@dataclass(frozen=True)
class Traits:
    """Normalised match traits; empty string means unknown."""

    given_name: str = ""
    family_name: str = ""
    birth_date: str = ""  # YYYYMMDD
    street: str = ""
    locality: str = ""
    postal_code: str = ""

    @classmethod
    def normalised(
        cls,
        *,
        given_name: str = "",
        family_name: str = "",
        birth_date: str = "",
        street: str = "",
        locality: str = "",
        postal_code: str = "",
    ) -> Traits:
        return cls(
            given_name=_clean(given_name),
            family_name=_clean(family_name),
            birth_date=re.sub(r"\D", "", birth_date),
            street=_clean(street),
            locality=_clean(locality),
            postal_code=re.sub(r"\s+", "", postal_code).upper(),
        )

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name, _ in FIELDS)

    def blocking_keys(self) -> list[int]:
        """Keys of the blocks this record belongs to (hashed, so no trait sits in an index).

        Several independent blocks, so that one corrupted field does not hide a match: the
        postcode, the full date of birth, the family name's sound with the first initial,
        and the given name's sound with the birth year.
        """
        keys: list[str] = []
        if self.postal_code:
            keys.append(f"pc:{self.postal_code}")
        if len(self.birth_date) == 8:
            keys.append(f"dob:{self.birth_date}")
        if self.family_name and self.given_name:
            keys.append(f"fn:{jellyfish.soundex(self.family_name)}:{self.given_name[0]}")
        if self.given_name and len(self.birth_date) == 8:
            keys.append(f"gy:{jellyfish.soundex(self.given_name)}:{self.birth_date[:4]}")
        if self.family_name and self.locality:
            keys.append(f"fl:{jellyfish.soundex(self.family_name)}:{self.locality[:4]}")
        return [block_key(k) for k in keys]


def block_key(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def _name_level(a: str, b: str) -> int:
    if a == b:
        return 3
    jw = jellyfish.jaro_winkler_similarity(a, b)
    if jw >= 0.92:
        return 2
    if jw >= 0.80:
        return 1
    return 0


def _date_level(a: str, b: str) -> int:
    if a == b:
        return 2
    if len(a) == 8 and len(b) == 8:
        swapped = a[:4] + a[6:8] + a[4:6]
        if swapped == b or jellyfish.levenshtein_distance(a, b) <= 1:
            return 1
    return 0


def _text_level(a: str, b: str) -> int:
    if a == b:
        return 2
    if jellyfish.jaro_winkler_similarity(a, b) >= 0.85:
        return 1
    return 1 if _token_overlap(a, b) >= 0.6 else 0


def _token_overlap(a: str, b: str) -> float:
    """Share of the shorter side's words found (allowing one typo) in the other, any order."""
    ta = [t for t in a.split() if not t.isdigit()]
    tb = [t for t in b.split() if not t.isdigit()]
    if not ta or not tb:
        return 0.0
    if len(ta) > len(tb):
        ta, tb = tb, ta
    hits = sum(
        1 for t in ta if any(t == u or jellyfish.levenshtein_distance(t, u) <= 1 for u in tb)
    )
    return hits / len(ta)


def _street_number(street: str) -> str:
    first = street.split(" ", 1)[0] if street else ""
    return first if first.isdigit() else ""


def _exact_level(a: str, b: str) -> int:
    return 1 if a == b else 0


def _code_level(a: str, b: str) -> int:
    if a == b:
        return 2
    return 1 if jellyfish.levenshtein_distance(a, b) <= 1 else 0


_COMPARE = {
    "given_name": _name_level,
    "family_name": _name_level,
    "birth_date": _date_level,
    "street_number": _exact_level,
    "street": _text_level,
    "locality": _text_level,
    "postal_code": _code_level,
}


def _value(traits: Traits, name: str) -> str:
    if name == "street_number":
        return _street_number(traits.street)
    return str(getattr(traits, name))


def compare(a: Traits, b: Traits) -> list[int]:
    """The agreement level of each field (MISSING where either side is unknown).

    Given and family names written the wrong way round (a common form-filling slip) are
    compared crosswise when that agrees better and one of them matches exactly.
    """
    out: list[int] = []
    for name, _ in FIELDS:
        x, y = _value(a, name), _value(b, name)
        out.append(_COMPARE[name](x, y) if x and y else MISSING)
    if a.given_name and a.family_name and b.given_name and b.family_name:
        cross = (
            _name_level(a.given_name, b.family_name),
            _name_level(a.family_name, b.given_name),
        )
        if max(cross) == 3 and sum(cross) > out[0] + out[1]:
            out[0], out[1] = cross
    return out


@dataclass
class Model:
    """m and u per field and level, and the prior share of matches among compared pairs."""

    m: list[list[float]]
    u: list[list[float]]
    prior: float
    fitted_pairs: int = 0
    iterations: int = 0
    converged: bool = False
    notes: dict[str, float] = field(default_factory=dict)

    def weights(self) -> list[list[float]]:
        return [
            [math.log2(mi / ui) for mi, ui in zip(mf, uf, strict=True)]
            for mf, uf in zip(self.m, self.u, strict=True)
        ]

    def score(self, levels: Sequence[int]) -> tuple[float, list[tuple[str, int, float]]]:
        """Match probability and each field's evidence (field, level, log2 weight)."""
        log_odds = math.log2(self.prior / (1 - self.prior))
        evidence: list[tuple[str, int, float]] = []
        weights = self.weights()
        for (name, _), level, w in zip(FIELDS, levels, weights, strict=True):
            if level == MISSING:
                continue
            log_odds += w[level]
            evidence.append((name, level, w[level]))
        log_odds = max(min(log_odds, 60.0), -60.0)
        return 1.0 / (1.0 + 2.0 ** (-log_odds)), evidence

    def to_json(self) -> dict[str, object]:
        return {
            "m": self.m,
            "u": self.u,
            "prior": self.prior,
            "fitted_pairs": self.fitted_pairs,
            "iterations": self.iterations,
            "converged": self.converged,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Model:
        return cls(
            m=[[float(v) for v in row] for row in data["m"]],  # type: ignore[attr-defined]
            u=[[float(v) for v in row] for row in data["u"]],  # type: ignore[attr-defined]
            prior=float(data["prior"]),  # type: ignore[arg-type]
            fitted_pairs=int(data.get("fitted_pairs", 0)),  # type: ignore[call-overload]
            iterations=int(data.get("iterations", 0)),  # type: ignore[call-overload]
            converged=bool(data.get("converged", False)),
        )


def default_model() -> Model:
    """Weights a new deployment starts with, before EM has seen its data."""
    m = [
        [0.02, 0.05, 0.13, 0.80],  # given name: disagree, similar, close, exact
        [0.02, 0.05, 0.13, 0.80],
        [0.05, 0.10, 0.85],  # birth date: disagree, one slip, exact
        [0.15, 0.85],  # street number: disagree, equal
        [0.10, 0.20, 0.70],
        [0.05, 0.15, 0.80],
        [0.05, 0.10, 0.85],
    ]
    u = [
        [0.90, 0.06, 0.03, 0.01],
        [0.95, 0.03, 0.015, 0.005],
        [0.985, 0.01, 0.005],
        [0.95, 0.05],
        [0.97, 0.025, 0.005],
        [0.90, 0.05, 0.05],
        [0.80, 0.15, 0.05],
    ]
    return Model(m=m, u=u, prior=0.05)


def fit_em(
    vectors: NDArray[np.int8],
    start: Model | None = None,
    *,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
    floor: float = 1e-6,
) -> Model:
    """Estimate m, u and the prior from unlabelled comparison vectors (rows: pairs).

    Missing levels (MISSING) are left out of both sides of each field's estimate.
    """
    model = start or default_model()
    n_pairs, n_fields = vectors.shape
    if n_pairs == 0:
        return model
    levels = [n for _, n in FIELDS]
    onehots: list[NDArray[np.float64]] = []
    present: list[NDArray[np.float64]] = []
    for f in range(n_fields):
        column = vectors[:, f]
        mask = column != MISSING
        onehot = np.zeros((n_pairs, levels[f]))
        onehot[np.arange(n_pairs)[mask], column[mask]] = 1.0
        onehots.append(onehot)
        present.append(mask.astype(np.float64))
    m = [np.array(row, dtype=np.float64) for row in model.m]
    u = [np.array(row, dtype=np.float64) for row in model.u]
    prior = model.prior
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):  # noqa: B007
        log_m = np.full(n_pairs, math.log(prior))
        log_u = np.full(n_pairs, math.log(1 - prior))
        for f in range(n_fields):
            log_m += onehots[f] @ np.log(m[f])
            log_u += onehots[f] @ np.log(u[f])
        g = 1.0 / (1.0 + np.exp(np.clip(log_u - log_m, -700, 700)))
        new_prior = float(np.clip(g.mean(), floor, 1 - floor))
        change = abs(new_prior - prior)
        for f in range(n_fields):
            mf = g @ onehots[f] / max(float(g @ present[f]), floor)
            uf = (1 - g) @ onehots[f] / max(float((1 - g) @ present[f]), floor)
            mf = np.clip(mf, floor, None)
            uf = np.clip(uf, floor, None)
            mf, uf = mf / mf.sum(), uf / uf.sum()
            change = max(change, float(np.abs(mf - m[f]).max()), float(np.abs(uf - u[f]).max()))
            m[f], u[f] = mf, uf
        prior = new_prior
        if change < tolerance:
            converged = True
            break
    return Model(
        m=[row.tolist() for row in m],
        u=[row.tolist() for row in u],
        prior=prior,
        fitted_pairs=n_pairs,
        iterations=iteration,
        converged=converged,
    )

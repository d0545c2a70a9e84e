"""Merge rules: per-type limits, priority, unique types, shared-value detection, thresholds.

The rules live in the database as one ``MergeRules`` message (UpdateMergeRules changes
them, with a revision for optimistic concurrency); :data:`DEFAULT_RULES` is what a new
installation starts with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from continuum.identity.v1 import identity_resources_pb2 as res
from continuum_identity import identifiers as ids
from continuum_runtime.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class TypeRule:
    type: int
    priority: int
    max_per_customer: int  # 0: no limit
    limit_window: timedelta | None
    unique: bool
    merges_known_customers: bool


@dataclass(frozen=True)
class Rules:
    """The rules in the form the resolver reads them."""

    by_type: dict[int, TypeRule]
    shared_detection: bool
    shared_max_customers: int
    shared_window: timedelta | None
    auto_link_threshold: float
    review_threshold: float
    revision: int

    def rule(self, id_type: int) -> TypeRule:
        found = self.by_type.get(id_type)
        if found is None:
            return TypeRule(id_type, 50, 0, None, False, id_type != ids.DEVICE_ID)
        return found

    def priority(self, id_type: int) -> int:
        return self.rule(id_type).priority


def _type_rule(
    t: int, priority: int, max_per: int, *, unique: bool = False, merges: bool = True
) -> res.IdentifierTypeRule:
    return res.IdentifierTypeRule(
        type=t,  # type: ignore[arg-type]
        priority=priority,
        max_per_customer=max_per,
        unique=unique,
        merges_known_customers=merges,
    )


def default_rules() -> res.MergeRules:
    rules = res.MergeRules(
        type_rules=[
            _type_rule(ids.ACCOUNT_ID, 100, 1, unique=True),
            _type_rule(ids.LOYALTY_ID, 95, 2),
            _type_rule(ids.EMAIL, 90, 5),
            _type_rule(ids.POS_CUSTOMER_NUMBER, 80, 3),
            _type_rule(ids.PHONE, 70, 3),
            _type_rule(ids.PAYMENT_TOKEN, 60, 20),
            _type_rule(ids.PAYMENT_FINGERPRINT, 60, 10),
            _type_rule(ids.DEVICE_ID, 10, 50, merges=False),
        ],
        shared_value_detection=res.SharedValueDetection(enabled=True, max_distinct_customers=8),
        match_thresholds=res.MatchThresholds(auto_link_threshold=0.95, review_threshold=0.6),
        revision=0,
    )
    rules.shared_value_detection.window.FromTimedelta(timedelta(days=365))
    return rules


def compile_rules(message: res.MergeRules) -> Rules:
    by_type: dict[int, TypeRule] = {}
    for r in message.type_rules:
        window = r.limit_window.ToTimedelta() if r.HasField("limit_window") else None
        by_type[r.type] = TypeRule(
            type=r.type,
            priority=r.priority,
            max_per_customer=r.max_per_customer,
            limit_window=window if window else None,
            unique=r.unique,
            merges_known_customers=r.merges_known_customers and r.type != ids.DEVICE_ID,
        )
    svd = message.shared_value_detection
    window = svd.window.ToTimedelta() if svd.HasField("window") else None
    return Rules(
        by_type=by_type,
        shared_detection=svd.enabled,
        shared_max_customers=svd.max_distinct_customers or 8,
        shared_window=window if window else None,
        auto_link_threshold=message.match_thresholds.auto_link_threshold,
        review_threshold=message.match_thresholds.review_threshold,
        revision=message.revision,
    )


def check_rules(message: res.MergeRules) -> None:
    """What protovalidate cannot say: no type twice, thresholds in order."""
    violations: list[FieldViolation] = []
    seen: set[int] = set()
    for i, r in enumerate(message.type_rules):
        if r.type in seen:
            violations.append(
                FieldViolation(f"merge_rules.type_rules[{i}].type", "type listed twice")
            )
        seen.add(r.type)
        if r.type == ids.DEVICE_ID and r.merges_known_customers:
            violations.append(
                FieldViolation(
                    f"merge_rules.type_rules[{i}].merges_known_customers",
                    "a device id never merges two known customers (shared-device rule)",
                )
            )
        if r.HasField("limit_window") and r.limit_window.ToTimedelta() <= timedelta(0):
            violations.append(
                FieldViolation(f"merge_rules.type_rules[{i}].limit_window", "must be positive")
            )
    t = message.match_thresholds
    if t.review_threshold > t.auto_link_threshold:
        violations.append(
            FieldViolation(
                "merge_rules.match_thresholds.review_threshold",
                "must not exceed auto_link_threshold",
            )
        )
    if violations:
        raise InvalidArgument("invalid merge rules", violations=violations)

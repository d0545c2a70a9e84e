"""Probabilistic matching on traits: auto-links, review suggestions, EM fitting."""

from __future__ import annotations

import numpy as np
from google.type import date_pb2

from continuum.common.v1 import identifier_pb2 as idpb
from continuum.identity.v1 import identity_resources_pb2 as res
from continuum.identity.v1 import identity_service_pb2 as pb
from continuum_identity import store
from continuum_identity.fit import fit_model
from continuum_identity.matching import (
    FIELDS,
    MISSING,
    Model,
    Traits,
    compare,
    default_model,
    fit_em,
)
from tests.identity.conftest import Identity
from tests.identity.test_resolve import events, resolve

T = idpb.IdentifierType


def loyalty(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_LOYALTY_ID, value=value)


def traits(
    given: str, family: str, born: tuple[int, int, int] | None, street: str, town: str, pc: str
) -> res.MatchTraits:
    message = res.MatchTraits(
        given_name=given,
        family_name=family,
        street_address=street,
        locality=town,
        postal_code=pc,
    )
    if born:
        message.birth_date.CopyFrom(date_pb2.Date(year=born[0], month=born[1], day=born[2]))
    return message


JANE = traits("Jane", "Whitfield", (1984, 3, 9), "12 Harbour Street", "Mosman", "2088")


async def test_a_record_with_the_same_person_s_traits_links_to_them(identity: Identity) -> None:
    first = await resolve(identity, loyalty("L-1001"), traits=JANE)
    typo = traits("Jnae", "Whitfield", (1984, 3, 9), "12 Harbour St", "Mosman", "2088")
    second = await resolve(identity, loyalty("L-2002"), traits=typo)
    assert second.customer_id == first.customer_id
    assert second.outcome == pb.RESOLVE_OUTCOME_LINKED
    assert second.match_score >= 0.95
    links = await identity.stub.ListLinks(
        pb.ListLinksRequest(customer_id=first.customer_id), metadata=identity.metadata
    )
    (link,) = links.links
    assert link.method == res.LINK_METHOD_PROBABILISTIC
    assert link.score == second.match_score
    assert {e.field for e in link.evidence} >= {"given_name", "family_name", "birth_date"}
    (linked,) = await events(identity, "identity.identifiers_linked")
    assert linked.customer_id == first.customer_id


async def test_traits_never_outvote_a_different_account_id(identity: Identity) -> None:
    first = await resolve(
        identity, idpb.Identifier(type=T.IDENTIFIER_TYPE_ACCOUNT_ID, value="acc-1"), traits=JANE
    )
    twin = await resolve(
        identity, idpb.Identifier(type=T.IDENTIFIER_TYPE_ACCOUNT_ID, value="acc-2"), traits=JANE
    )
    assert twin.customer_id != first.customer_id
    assert twin.outcome == pb.RESOLVE_OUTCOME_CREATED


async def test_someone_else_with_a_common_name_is_a_new_customer(identity: Identity) -> None:
    first = await resolve(identity, loyalty("L-3003"), traits=JANE)
    other = traits("Jane", "Whitfield", (1991, 11, 23), "4 Ocean Road", "Manly", "2095")
    second = await resolve(identity, loyalty("L-4004"), traits=other)
    assert second.customer_id != first.customer_id
    assert second.outcome == pb.RESOLVE_OUTCOME_CREATED
    assert list(second.probable_match_ids) == []


async def test_a_middling_match_waits_for_review_and_accepting_it_merges(
    identity: Identity,
) -> None:
    first = await resolve(identity, loyalty("L-5005"), traits=JANE)
    unsure = traits("Olivia", "Whitfield", (1979, 6, 1), "14 Harbor Street", "Mosman", "2088")
    second = await resolve(identity, loyalty("L-6006"), traits=unsure)
    assert second.customer_id != first.customer_id
    (match_id,) = second.probable_match_ids
    listed = await identity.stub.ListProbableMatches(
        pb.ListProbableMatchesRequest(state=res.PROBABLE_MATCH_STATE_PENDING),
        metadata=identity.metadata,
    )
    (pending,) = listed.probable_matches
    assert pending.match_id == match_id
    assert pending.candidate_customer_id == first.customer_id
    assert 0.6 <= pending.score < 0.95
    accepted = await identity.stub.AcceptProbableMatch(
        pb.AcceptProbableMatchRequest(
            request_id="accept-1", match_id=match_id, actor="reviewer", reason="same customer"
        ),
        metadata=identity.metadata,
    )
    assert accepted.probable_match.state == res.PROBABLE_MATCH_STATE_ACCEPTED
    assert accepted.customer.customer_id == first.customer_id
    assert second.customer_id in accepted.customer.alias_customer_ids
    again = await resolve(identity, loyalty("L-6006"))
    assert again.customer_id == first.customer_id


async def test_a_rejected_suggestion_keeps_the_customers_apart(identity: Identity) -> None:
    first = await resolve(identity, loyalty("L-7007"), traits=JANE)
    unsure = traits("Olivia", "Whitfield", (1979, 6, 1), "14 Harbor Street", "Mosman", "2088")
    second = await resolve(identity, loyalty("L-8008"), traits=unsure)
    (match_id,) = second.probable_match_ids
    rejected = await identity.stub.RejectProbableMatch(
        pb.RejectProbableMatchRequest(
            request_id="reject-1", match_id=match_id, actor="reviewer", reason="sisters"
        ),
        metadata=identity.metadata,
    )
    assert rejected.probable_match.state == res.PROBABLE_MATCH_STATE_REJECTED
    why = await identity.stub.Explain(
        pb.ExplainRequest(customer_id=first.customer_id, other_customer_id=second.customer_id),
        metadata=identity.metadata,
    )
    assert res.NON_MERGE_REASON_REJECTED_IN_REVIEW in why.explanation.non_merge_reasons


def test_em_recovers_the_weights_that_generated_the_pairs() -> None:
    rng = np.random.default_rng(11)
    truth = default_model()
    truth.prior = 0.2
    n = 20_000
    is_match = rng.random(n) < truth.prior
    columns = []
    for f, (_, levels) in enumerate(FIELDS):
        m, u = np.array(truth.m[f]), np.array(truth.u[f])
        from_m = rng.choice(levels, size=n, p=m / m.sum())
        from_u = rng.choice(levels, size=n, p=u / u.sum())
        column = np.where(is_match, from_m, from_u)
        column[rng.random(n) < 0.05] = MISSING
        columns.append(column)
    vectors = np.stack(columns, axis=1).astype(np.int8)
    start = default_model()
    start.m = [[1.0 / len(row)] * (len(row) - 1) + [1.0] for row in start.m]
    start.m = [[v / sum(row) for v in row] for row in start.m]
    start.u = [[1.0] + [1.0 / len(row)] * (len(row) - 1) for row in start.u]
    start.u = [[v / sum(row) for v in row] for row in start.u]
    start.prior = 0.5
    fitted = fit_em(vectors, start)
    assert fitted.converged
    assert abs(fitted.prior - truth.prior) < 0.02
    for f in range(len(FIELDS)):
        assert abs(fitted.m[f][-1] - truth.m[f][-1]) < 0.05
        assert abs(fitted.u[f][0] - truth.u[f][0]) < 0.05


async def test_fitting_on_stored_records_saves_a_model_the_service_uses(
    identity: Identity,
) -> None:
    people = [
        ("Ann", "Okafor", (1970, 1, 2), "3 Elm Street", "Bondi", "2026"),
        ("Raj", "Patel", (1988, 5, 17), "77 King Road", "Newtown", "2042"),
        ("Mia", "Kowalski", (1995, 9, 30), "9 Bay Parade", "Coogee", "2034"),
    ]
    for n, person in enumerate(people):
        await resolve(identity, loyalty(f"F-{n}"), traits=traits(*person))
        moved = (*person[:3], "1 New Street", person[4], person[5])
        await resolve(identity, loyalty(f"G-{n}"), traits=traits(*moved))
    async with identity.ctx.db.transaction() as session:
        model = await fit_model(session)
        saved = await store.load_model(session)
    assert model.fitted_pairs >= 3
    assert saved == model.to_json()
    identity_resolver_model = Model.from_json(saved)
    assert identity_resolver_model.prior == model.prior


def test_comparison_levels_tolerate_typos_and_swapped_day_and_month() -> None:
    a = Traits.normalised(given_name="Jane", family_name="Whitfield", birth_date="19840309")
    b = Traits.normalised(given_name="Jnae", family_name="Whitfeld", birth_date="19840903")
    levels = compare(a, b)
    assert levels[0] in (1, 2)  # a transposed given name is similar, not equal
    assert levels[1] == 2
    assert levels[2] == 1  # day and month swapped
    assert levels[3:] == [MISSING, MISSING, MISSING, MISSING]


def test_names_written_the_wrong_way_round_still_agree() -> None:
    a = Traits.normalised(given_name="Robbie", family_name="Lowe", street="27 Woolnough Street")
    b = Traits.normalised(given_name="Lowe", family_name="Robbie", street="27 Woolnough St")
    levels = compare(a, b)
    assert levels[:2] == [3, 3]
    assert levels[3] == 1  # the same street number
    other = Traits.normalised(given_name="Robbie", family_name="Lowe", street="5 Other Road")
    assert compare(a, other)[3] == 0

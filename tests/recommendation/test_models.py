"""Model versions: rebuild from stored behaviour, activation, rollback, feedback."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum.recommendation.v1 import recommendation_service_pb2 as pb
from continuum_runtime.testing import eventually
from tests.recommendation.conftest import DAY, Suite, order

NOW = time.time()
READY = res.MODEL_VERSION_STATE_READY
ACTIVE = res.MODEL_VERSION_STATE_ACTIVE


async def rebuild(suite: Suite, **kw: object) -> res.ModelVersion:
    answer = await suite.rec.RebuildModel(
        pb.RebuildModelRequest(request_id=str(uuid.uuid4()), actor="ops", **kw),  # type: ignore[arg-type]
        metadata=suite.metadata,
    )
    version_id = answer.model_version.version_id

    async def built() -> bool:
        got = await suite.rec.GetModelVersion(
            pb.GetModelVersionRequest(version_id=version_id), metadata=suite.metadata
        )
        return got.model_version.state in (READY, ACTIVE, res.MODEL_VERSION_STATE_FAILED)

    await eventually(built, timeout_s=30)
    got = await suite.rec.GetModelVersion(
        pb.GetModelVersionRequest(version_id=version_id), metadata=suite.metadata
    )
    return got.model_version


async def test_rebuild_activate_and_roll_back(suite: Suite) -> None:
    for n in range(3):
        await suite.publish(
            "profile", "profile.event_ingested", order(f"c-{n}", ["SHOE-38", "BAG-1"], NOW - DAY)
        )
    first = await rebuild(suite, activate_when_ready=True, parameters={"neighbours": "10"})
    assert first.state == ACTIVE
    assert first.interaction_count == 6
    assert first.parameters["neighbours"] == "10"
    info = await suite.rec.GetModelInfo(pb.GetModelInfoRequest(), metadata=suite.metadata)
    assert info.active_version.version_id == first.version_id
    answer = await suite.rec.GetComplements(
        pb.GetComplementsRequest(skus=["SHOE-38"]), metadata=suite.metadata
    )
    assert answer.model_version == first.version_id
    assert answer.items[0].sku == "BAG-1"

    second = await rebuild(suite)
    assert second.state == READY
    activated = await suite.rec.ActivateModelVersion(
        pb.ActivateModelVersionRequest(
            request_id=str(uuid.uuid4()), version_id=second.version_id, actor="ops"
        ),
        metadata=suite.metadata,
    )
    assert activated.previous_version_id == first.version_id
    assert activated.model_version.state == ACTIVE
    listed = await suite.rec.ListModelVersions(
        pb.ListModelVersionsRequest(), metadata=suite.metadata
    )
    assert [(v.version_id, v.state) for v in listed.model_versions] == [
        (second.version_id, ACTIVE),
        (first.version_id, res.MODEL_VERSION_STATE_RETIRED),
    ]
    # A stale expectation is refused; rolling back with the right one works.
    with pytest.raises(grpc.aio.AioRpcError) as raced:
        await suite.rec.ActivateModelVersion(
            pb.ActivateModelVersionRequest(
                request_id=str(uuid.uuid4()),
                version_id=first.version_id,
                expected_active_version_id=first.version_id,
                actor="ops",
            ),
            metadata=suite.metadata,
        )
    assert raced.value.code() == grpc.StatusCode.ABORTED
    back = await suite.rec.ActivateModelVersion(
        pb.ActivateModelVersionRequest(
            request_id=str(uuid.uuid4()),
            version_id=first.version_id,
            expected_active_version_id=second.version_id,
            actor="ops",
        ),
        metadata=suite.metadata,
    )
    assert back.model_version.state == ACTIVE
    events = await suite.ctx.redis.xrange(
        f"{suite.ctx.settings.redis_namespace}:events:recommendation"
    )
    assert events is not None


async def test_model_errors(suite: Suite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await suite.rec.GetModelVersion(
            pb.GetModelVersionRequest(version_id="mv-nope"), metadata=suite.metadata
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad_parameter:
        await suite.rec.RebuildModel(
            pb.RebuildModelRequest(request_id="r1", actor="ops", parameters={"bogus": "1"}),
            metadata=suite.metadata,
        )
    assert bad_parameter.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await suite.rec.ActivateModelVersion(
            pb.ActivateModelVersionRequest(request_id="a1", version_id="mv-nope", actor="ops"),
            metadata=suite.metadata,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_feedback_is_attributed_once(suite: Suite) -> None:
    served = await suite.rec.GetRecommendations(
        pb.GetRecommendationsRequest(), metadata=suite.metadata
    )
    at = Timestamp()
    at.GetCurrentTime()
    request = pb.RecordFeedbackRequest(
        request_id="fb-1",
        feedback=[
            res.Feedback(
                recommendation_id=served.recommendation_id,
                kind=res.FEEDBACK_KIND_IMPRESSION,
                occur_time=at,
            ),
            res.Feedback(recommendation_id="forged", kind=res.FEEDBACK_KIND_CLICK, occur_time=at),
        ],
    )
    first = await suite.rec.RecordFeedback(request, metadata=suite.metadata)
    again = await suite.rec.RecordFeedback(request, metadata=suite.metadata)
    assert (first.attributed_count, first.unattributed_count) == (1, 1)
    assert again == first
    info = await suite.rec.GetModelInfo(pb.GetModelInfoRequest(), metadata=suite.metadata)
    assert info.recent_metrics.impression_count == 1
    assert info.recent_metrics.click_count == 1

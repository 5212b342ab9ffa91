"""The KafkaSource schema (``sources.knative.dev/v1beta1``), which the ``cloudcoil`` Knative models do not ship.

Its CRD in eventing-kafka-broker preserves unknown fields (the webhook validates the Go types), so there is no
generated model to take: this is ``KafkaSourceSpec`` of ``control-plane/pkg/apis/sources/v1beta1/kafka_types.go``
field by field, with the shared Knative types (sink, ``ceOverrides``, delivery) taken from the generated eventing
models. ``validate`` runs it strict like the others; the webhook's own rules (``topics`` and ``bootstrapServers``
required, ``initialOffset`` earliest or latest, ``ordering`` ordered or unordered) are the field types here.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from cloudcoil import apimachinery
from cloudcoil.pydantic import BaseModel
from cloudcoil.resources import Resource
from pydantic import Field

from infra.knative import generated

generated("knative_eventing.eventing.v1")  # imported without their packages' __init__: see infra.knative.generated
generated("knative_eventing.sources.v1")
from cloudcoil.models.knative_eventing.eventing.v1 import DeliveryModel  # noqa: E402
from cloudcoil.models.knative_eventing.sources.v1 import CeOverridesModel, Sink  # noqa: E402

API_VERSION: Final = "sources.knative.dev/v1beta1"


class KafkaSourceSpec(BaseModel):
    """What a KafkaSource reads (servers, topics, consumer group, offset) and where it delivers (sink, delivery)."""

    consumers: int | None = None
    bootstrap_servers: Annotated[list[str], Field(alias="bootstrapServers", min_length=1)]
    net: dict[str, Any] | None = None  # SASL/TLS (KafkaAuthSpec); knflow renders none
    topics: Annotated[list[str], Field(min_length=1)]
    consumer_group: Annotated[str | None, Field(alias="consumerGroup")] = None
    initial_offset: Annotated[Literal["earliest", "latest"] | None, Field(alias="initialOffset")] = None
    delivery: DeliveryModel | None = None
    ordering: Literal["ordered", "unordered"] | None = None
    sink: Sink
    ce_overrides: Annotated[CeOverridesModel | None, Field(alias="ceOverrides")] = None


class KafkaSource(Resource):
    """A KafkaSource: Kafka records as ``dev.knative.kafka.event`` CloudEvents to a sink."""

    api_version: Annotated[Literal["sources.knative.dev/v1beta1"] | None, Field(alias="apiVersion")] = API_VERSION
    kind: Literal["KafkaSource"] | None = "KafkaSource"
    metadata: apimachinery.ObjectMeta | None = None
    spec: KafkaSourceSpec

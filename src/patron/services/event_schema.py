"""The event JSON that ``POST /v1/events``, imports and the stream consumer all take."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.services.instant import Instant

Id = Annotated[str, Field(min_length=1, max_length=200)]
Quantity = Annotated[int, Field(ge=1, le=1_000_000)]
Money = Annotated[int, Field(ge=0, le=10**12)]
#: the most a purchase may total (its lines' price times quantity, and shipping), in minor units
MAX_TOTAL = 10**13


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=100)]
    sku: Annotated[str, Field(max_length=200)] | None = None
    category: Annotated[str, Field(max_length=200)] | None = None
    quantity: Quantity = 1
    unit_price: Money
    discount: Money = 0
    tax: Money = 0
    gift_card: bool = False
    name: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _discount(self) -> LineIn:
        if self.discount > self.quantity * self.unit_price:
            raise ValueError("discount exceeds the line's price times quantity")
        return self


class RefundLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=100)]
    quantity: Quantity = 1


class EventIn(BaseModel):
    """One event. Which fields apply depends on ``type``; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    id: Id = Field(description="Your id for this event; a replay with the same id is a no-op.")
    type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    member_id: Id
    occurred_at: Instant | None = Field(
        None, description="When it happened (RFC 3339 with offset). Defaults to receipt time."
    )
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    location_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    channel: Annotated[str, Field(max_length=50)] | None = None
    items: Annotated[list[LineIn | RefundLineIn], Field(max_length=1000)] | None = None
    shipping: Money = 0
    amount: Money | None = Field(None, description="Refund by amount, or a visit's spend.")
    refers_to: Id | None = Field(None, description="The purchase a refund or cancel refers to.")
    origin: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    destination: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    fare_class: Annotated[str, Field(max_length=2)] | None = None
    fare: Money | None = None
    attributes: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _items_by_type(cls, data: object) -> object:
        # Purchases carry full lines; refunds name lines and quantities. Validate each as its own.
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            model = RefundLineIn if data.get("type") == "refund" else LineIn
            data = {**data, "items": [model.model_validate(i) for i in data["items"]]}
        return data

    @model_validator(mode="after")
    def _shape(self) -> EventIn:
        lines = self.items or []
        if self.type == "purchase":
            if not lines:
                raise ValueError("a purchase needs at least one item")
            ids = [ln.id for ln in lines]
            if len(set(ids)) != len(ids):
                raise ValueError("item ids must be unique within an event")
            total = self.shipping + sum(ln.quantity * ln.unit_price for ln in self.purchase_lines())
            if total > MAX_TOTAL:
                raise ValueError(f"the purchase's total ({total}) is above {MAX_TOTAL} in minor units")
        elif self.type == "refund":
            if not self.refers_to:
                raise ValueError("a refund needs refers_to: the id of the purchase it refunds")
            if bool(lines) == (self.amount is not None):
                raise ValueError("a refund needs either items or amount, not both")
        elif self.type == "cancel":
            if not self.refers_to:
                raise ValueError("a cancel needs refers_to: the id of the event it cancels")
        elif self.type == "flight":
            if not (self.origin and self.destination):
                raise ValueError("a flight needs origin and destination (IATA codes)")
            if self.origin == self.destination:
                raise ValueError(f"a flight cannot leave from and land at the same airport ({self.origin})")
        elif lines:
            raise ValueError(f"a {self.type} event takes no items")
        return self

    def purchase_lines(self) -> list[LineIn]:
        return [ln for ln in self.items or [] if isinstance(ln, LineIn)]

    def refund_lines(self) -> list[RefundLineIn]:
        return [ln for ln in self.items or [] if isinstance(ln, RefundLineIn)]

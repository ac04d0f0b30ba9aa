from tests.conftest import Api, purchase


def test_contract_example_purchase_earns_33_points(api: Api) -> None:
    program = api.program()
    member = api.member(program, email="ann@example.com")
    items = [
        {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
        {"id": "l2", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1500},
    ]
    out = api.event(purchase(member, "order-1001", items))
    assert out["points"] == 33
    assert out["lines"] == [
        {"id": "l1", "points": 18, "amount": 900},
        {"id": "l2", "points": 15, "amount": 1500},
    ]
    assert api.points(member)["available"] == 33
    assert out["member"]["points"]["available"] == 33  # the member as the event left them


def test_the_api_document_names_every_operation_once() -> None:
    """Client generators key methods by operationId: two operations with one id break them."""
    import warnings
    from collections import Counter

    from patron.api.app import create_app
    from patron.config import Settings
    from patron.storage.db import make_engine
    from patron.web.app import create_web_app

    for factory in (create_app, create_web_app):
        app = factory(Settings(database_url="sqlite://"), engine=make_engine("sqlite://"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spec = app.openapi()
        ids = Counter(op["operationId"] for ops in spec["paths"].values() for op in ops.values())
        assert [i for i, n in ids.items() if n > 1] == [], factory.__name__
        assert not [w for w in caught if "Duplicate Operation ID" in str(w.message)]
        assert "/v1/ticketed-events/{event_id}" in spec["paths"] and "/v1/events" in spec["paths"]

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

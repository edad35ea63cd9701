"""A saved model's serving data: written and read back the same, anything damaged one sentence naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from movierec.errors import MovierecError
from movierec.serving_info import NEW_USER_SHRINK, ServingInfo

PATH = Path("/home/me/models/als.pt")
RIDGE = {"method": "ridge", "lam": 0.1, "tau": [1.0, 0.5], "gamma": [2.0, 0.0]}
GOOD = ServingInfo(kind="rating", genres=["Comedy", "Drama"], neutral=3.5,
                   scorer={"kind": "factors", "fold_in": RIDGE}, new_user_shrink=4.0)


def test_round_trip():
    assert ServingInfo.from_json(GOOD.to_json(), PATH) == GOOD
    torch_model = ServingInfo(kind="like", genres=[], neutral=0.5, scorer={"kind": "torch"})
    back = ServingInfo.from_json(torch_model.to_json(), PATH)
    assert back == torch_model and not back.in_numpy and back.lists is None
    # Written before models said their own shrinkage: the default of then.
    old = {k: v for k, v in json.loads(GOOD.to_json()).items() if k != "new_user_shrink"}
    assert ServingInfo.from_json(json.dumps(old), PATH).new_user_shrink == NEW_USER_SHRINK


def damaged(**change):
    data = json.loads(GOOD.to_json())
    data.update(change)
    return json.dumps(data)


@pytest.mark.parametrize(("text", "reason"), [
    ("{not json", "its serving data is not valid JSON"),
    (None, "its serving data is not valid JSON"),
    ("[1, 2]", "its serving data is a list, not an object"),
    (damaged(genres="Comedy"), "its 'genres' is \"Comedy\", not a list of texts"),
    (damaged(genres=[1]), "its 'genres' is a list, not a list of texts"),
    (damaged(neutral="high"), "its 'neutral' is \"high\", not a number"),
    (damaged(neutral=None), "its 'neutral' is null, not a number"),
    (damaged(kind="stars"), "its serving data does not say what the model predicts"),
    (damaged(scorer={"kind": "magic"}), "its serving data does not say how the model scores"),
    (damaged(scorer={"kind": "factors", "fold_in": {**RIDGE, "lam": -1}}),
     "its serving data has a new-user fold-in it cannot follow"),
    (damaged(scorer={"kind": "factors", "fold_in": {**RIDGE, "tau": [1.0]}}),
     "its serving data has a new-user fold-in it cannot follow"),
    (damaged(new_user_shrink=-2), "its serving data has no usable shrinkage for new users"),
    (damaged(lists={"method": "pick-and-like"}), "its serving data has lists it cannot follow"),
])
def test_damaged_serving_data_is_one_sentence(text, reason):
    with pytest.raises(MovierecError) as caught:
        ServingInfo.from_json(text, PATH)
    assert str(caught.value) == f"{PATH} is damaged ({reason})."

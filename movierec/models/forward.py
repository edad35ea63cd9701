"""The scoring passes of the RBMs, autoencoders and Mult-VAE/DAE in numpy, from their saved arrays alone.

What ``score``, ``fold_in`` and ``item_vectors`` of :mod:`~movierec.models.rbm_like`,
:mod:`~movierec.models.rbm_rating`, :mod:`~movierec.models.autoencoder` and :mod:`~movierec.models.multvae`
compute, as matrix products and elementwise functions of the state arrays (``W``, ``a``, ``b``, ... without
the ``state.`` prefix) and the model's config dict: every step of those passes is deterministic (mean-field
probabilities, no dropout, the VAE's mean code), so the numbers are the torch model's to float32 rounding.
:class:`movierec.scorers.NumpyScorer` answers saved models with them; tests hold them to the torch models.

One class per algorithm (:data:`FORWARDS`, by model name and mode). A user's ratings come in as movie indices
(n,) and stars (n,); a known user's are their training ratings. The item-based rating RBM's new users are fitted
by :mod:`movierec.models.lbfgs`, torch's L-BFGS in numpy (a checkpoint saved without the fit's prior leaves them to
the torch model: :meth:`RatingRBMForward.fold_in` returns None).

Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from movierec.models.lbfgs import Objective, minimize

Arrays = Mapping[str, np.ndarray]
Seen = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""A known user's training ratings: user index -> movie indices (n,), stars (n,)."""

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    return np.log(p / (1 - p))


def _selu(x: np.ndarray) -> np.ndarray:
    return (_SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0)))).astype(x.dtype)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "selu": _selu,
    "identity": lambda x: x,
}


def _layers(state: Arrays, prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``torch.nn.Linear`` layers saved as ``{prefix}.{j}.weight`` (out, in) and ``.bias`` (out,), in order."""
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    while f"{prefix}.{len(layers)}.weight" in state:
        j = len(layers)
        layers.append((state[f"{prefix}.{j}.weight"], state[f"{prefix}.{j}.bias"]))
    return layers


def _sorted(items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    items = np.asarray(items, dtype=np.int64)
    order = np.argsort(items, kind="stable")
    return items[order], np.asarray(ratings, dtype=np.float32)[order]


class Forward:
    """A model's scoring passes from its arrays ``state`` and config dict ``config`` (KeyError: a config that
    does not say what the pass needs, e.g. saved before an option existed)."""

    needs_fit_state: ClassVar[bool] = False
    """Whether it reads what training derived from the training ratings (an item-based model's movie codes),
    valid only for a model fitted on exactly the saved training ratings."""

    def __init__(self, state: Arrays, config: Mapping[str, Any], rating_values: tuple[float, ...]):
        self.state = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
        self.config = config
        self.values = np.asarray(rating_values, dtype=np.float32)  # (K,)
        self.rating_min, self.rating_max = float(self.values[0]), float(self.values[-1])

    def scores(self, users: np.ndarray, seen: Seen) -> np.ndarray:
        """Raw scores of every movie for known users ``users`` (B,): (B, I). Each user's code from their training
        ratings, then every movie read out for all of them at once (one matrix product)."""
        codes = [self.code(*_sorted(*seen(u))) for u in np.asarray(users, dtype=np.int64).tolist()]
        return self.readout(np.stack([c[0] for c in codes]), np.array([c[1] for c in codes], dtype=np.float32))

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray | None:
        """Raw scores of every movie for a new user from their ratings: (I,)."""
        code, offset = self.code(*_sorted(items, ratings))
        return self.readout(code[None, :], np.array([offset], dtype=np.float32))[0]

    def fits(self, n_users: int, n_items: int) -> bool:
        """Whether the arrays have the shapes a model of ``n_users`` users and ``n_items`` movies has."""
        raise NotImplementedError

    def _shapes_are(self, want: Mapping[str, tuple[int, ...]]) -> bool:
        return all(name in self.state and self.state[name].shape == shape for name, shape in want.items())

    def _chain(self, prefix: str, width: int) -> int | None:
        """The output width of the saved layers ``prefix`` fed ``width`` inputs; None where they do not chain."""
        for weight, bias in _layers(self.state, prefix):
            if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
                return None
            width = weight.shape[0]
        return width

    def code(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
        """A user's hidden units (H,) from their ratings (movies ascending), and the offset their readout adds."""
        raise NotImplementedError

    def readout(self, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Users' hidden units (B, H) and offsets (B,) -> raw scores of every movie (B, I)."""
        raise NotImplementedError

    def item_vectors(self) -> np.ndarray:
        raise NotImplementedError


# -- RBMs ----------------------------------------------------------------------------------------------------
class LikeRBMForward(Forward):
    """:class:`~movierec.models.rbm_like.LikeRBM`: P(liked) = sigmoid(h W + b + o_u), h = sigmoid(v W^T + r D^T
    + a), one mean-field pass from the user's ratings."""

    def __init__(self, state: Arrays, config: Mapping[str, Any], rating_values: tuple[float, ...]):
        super().__init__(state, config, rating_values)
        self.threshold = float(config["like_threshold"])
        self.user_bias = bool(config["user_bias"])
        self.prior = float(config["user_bias_prior"]) if self.user_bias else 0.0
        s = self.state
        self.W, self.a, self.b = s["W"], s["a"].reshape(-1), s["b"].reshape(-1)  # (H, I), (H,), (I,)
        self.D = s.get("D")  # (H, I) or None
        self.rate = np.float32(s["like_rate"]) if self.user_bias else None

    def code(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
        liked = (ratings >= self.threshold).astype(np.float32)  # (n,)
        pre = self.W[:, items] @ liked  # (H,)
        if self.D is not None:
            pre = pre + (self.D[:, items].sum(1) + self.a)
        else:
            pre = pre + self.a
        offset = 0.0
        if self.rate is not None:
            own = (liked.sum() + np.float32(self.prior) * self.rate) / (np.float32(len(items)) + np.float32(self.prior))
            offset = float(logit(own) - logit(self.rate))
        return sigmoid(pre.astype(np.float32)), offset  # (H,)

    def readout(self, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        logits = codes @ self.W + self.b  # (B, I)
        if self.rate is not None:
            logits = logits + offsets[:, None]
        return sigmoid(logits.astype(np.float32))

    def fits(self, n_users: int, n_items: int) -> bool:
        hidden = self.W.shape[0]
        want = {"W": (hidden, n_items), "a": (1, hidden), "b": (1, n_items)}
        return self._shapes_are({**want, **({"D": want["W"]} if self.D is not None else {}),
                                 **({"like_rate": ()} if self.rate is not None else {})})

    def item_vectors(self) -> np.ndarray:
        return np.ascontiguousarray(self.W.T)  # (I, H)


class RatingRBMForward(Forward):
    """:class:`~movierec.models.rbm_rating.RatingRBM`: expected stars through softmax visible units. User
    orientation: one mean-field pass from the user's ratings. Item orientation: every movie's saved hidden
    probabilities read out through the user's visible unit (weights W[:, u], biases b[u])."""

    def __init__(self, state: Arrays, config: Mapping[str, Any], rating_values: tuple[float, ...]):
        super().__init__(state, config, rating_values)
        self.item_based = config["orientation"] == "item"
        s = self.state
        self.W, self.a, self.b = s["W"], s["a"].reshape(-1), s["b"]  # (H, C, K), (H,), (C, K)
        self.needs_fit_state = self.item_based  # type: ignore[misc]
        self.midpoints = (self.values[1:] + self.values[:-1]) / 2  # (K-1,)

    def _expected(self, logits: np.ndarray) -> np.ndarray:
        return (softmax(logits.astype(np.float32), axis=-1) @ self.values).astype(np.float32)

    def scores(self, users: np.ndarray, seen: Seen) -> np.ndarray:
        if not self.item_based:
            return super().scores(users, seen)
        users = np.asarray(users, dtype=np.int64)
        hidden = self.state["item_hidden"]  # (I, H)
        return np.stack([self._expected(hidden @ self.W[:, u] + self.b[u]) for u in users.tolist()])

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray | None:
        if not self.item_based:
            return super().fold_in(items, ratings)
        s = self.state
        if "prior_mean" not in s or "prior_std" not in s:
            return None  # saved without the prior: left to the torch model
        # A new visible unit x = mean + std * z (H+1, K) fitted to the ratings with the movies' hidden units
        # fixed, as RatingRBM.fold_in: the same convex problem, by the same L-BFGS.
        items, ratings = np.asarray(items, dtype=np.int64), np.asarray(ratings, dtype=np.float32)
        order = np.argsort(items, kind="stable")  # the same ratings in any order give the same numbers
        items, ratings = items[order], ratings[order]
        mean, std = s["prior_mean"], s["prior_std"]  # (H+1, K)
        unit = mean
        if items.size:
            hidden = s["item_hidden"][items]
            design = np.concatenate([hidden, np.ones((items.size, 1), np.float32)], 1)  # (n, H+1)
            target = self._state_index(ratings)  # (n,)
            z = minimize(_softmax_unit_objective(design, target, mean, std, float(self.config["fold_in_l2"])),
                         np.zeros(mean.size), max_iter=200, tolerance_grad=1e-6)
            unit = mean + std * z.reshape(mean.shape).astype(np.float32)
        return self._expected(s["item_hidden"] @ unit[:-1] + unit[-1])  # (I,)

    def _state_index(self, ratings: np.ndarray) -> np.ndarray:
        """Which of the K star values each rating is, (n,) -> (n,), as ``RatingRBM.state_index``."""
        return np.searchsorted(self.midpoints, ratings, side="left")  # as torch.bucketize

    def code(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
        k = self._state_index(ratings)  # (n,)
        return sigmoid((self.W[:, items, k].sum(1) + self.a).astype(np.float32)), 0.0  # (H,)

    def readout(self, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        w_flat = self.W.reshape(self.W.shape[0], -1)  # (H, I*K)
        out = np.empty((codes.shape[0], self.b.shape[0]), dtype=np.float32)
        chunk = max(1, (1 << 25) // self.b.size)  # bounds the (b, I, K) logits, as the torch model does
        for start in range(0, codes.shape[0], chunk):
            part = codes[start:start + chunk]
            out[start:start + chunk] = self._expected((part @ w_flat).reshape(part.shape[0], *self.b.shape) + self.b)
        return out

    def fits(self, n_users: int, n_items: int) -> bool:
        hidden, columns, k = self.W.shape[0], n_users if self.item_based else n_items, self.values.shape[0]
        want = {"W": (hidden, columns, k), "a": (1, hidden), "b": (columns, k)}
        if self.item_based:
            want["item_hidden"] = (n_items, hidden)
        return self.W.ndim == 3 and self._shapes_are(want)

    def item_vectors(self) -> np.ndarray:
        if self.item_based:
            return self.state["item_hidden"]  # (I, H)
        hidden = self.W.shape[0]
        return np.ascontiguousarray(self.W.reshape(hidden, -1).T).reshape(self.W.shape[1], -1)  # (I, K*H)


def _softmax_unit_objective(design: np.ndarray, target: np.ndarray, mean: np.ndarray, std: np.ndarray,
                            l2: float) -> Objective:
    """``z`` (flat) -> the penalised softmax loss ``sum_n -log softmax(design_n (mean + std z))[target_n] + l2 / 2
    ||z||^2`` and its gradient, in float64 as the torch fit computes them."""
    rows = np.arange(target.shape[0])
    design, mean, std = (a.astype(np.float64) for a in (design, mean, std))

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        z = flat.reshape(mean.shape)
        logits = design @ (mean + std * z)  # (n, K)
        top = logits.max(axis=1, keepdims=True)
        log_total = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))  # (n, 1)
        loss = (log_total[:, 0] - logits[rows, target]).sum() + 0.5 * l2 * (z * z).sum()
        p = np.exp(logits - log_total)  # softmax
        p[rows, target] -= 1.0
        grad = std * (design.T @ p) + l2 * z
        return float(loss), grad.reshape(-1)

    return objective


# -- autoencoders ----------------------------------------------------------------------------------------------
class _AutoEncoderForward(Forward):
    def __init__(self, state: Arrays, config: Mapping[str, Any], rating_values: tuple[float, ...]):
        super().__init__(state, config, rating_values)
        self.act = ACTIVATIONS[config["activation"]]
        self.sigmoid_output = config["output_activation"] == "sigmoid"
        self.row_bias = bool(config["row_bias"])
        self.fold_in_l2 = float(config["fold_in_l2"])
        s = self.state
        self.output_weight, self.output_bias = s["output_weight"], s["output_bias"]
        self.noise_var = np.float32(s["noise_var"])

    rows_are_users: ClassVar[bool] = True

    def fits(self, n_users: int, n_items: int) -> bool:
        rows, cols = (n_users, n_items) if self.rows_are_users else (n_items, n_users)
        first = self.state["input_weight"].shape[-1]
        last = self._chain("hidden", first)
        if last is None:
            return False
        want = {"input_weight": (cols, first), "input_bias": (first,), "output_weight": (cols, last),
                "output_bias": (cols,), "noise_var": ()}
        if self.row_bias:
            want["row_bias"] = (rows,)
        if not self.rows_are_users:
            want.update(item_codes=(n_items, last), prior_mean=(last + 1,), prior_precision=(last + 1, last + 1))
        return self._shapes_are(want)

    def _output(self, z: np.ndarray) -> np.ndarray:
        if self.sigmoid_output:
            return (self.rating_min + (self.rating_max - self.rating_min) * sigmoid(z.astype(np.float32))).astype(
                np.float32)
        return z


class UserAutoEncoderForward(_AutoEncoderForward):
    """:class:`~movierec.models.autoencoder.UserAutoEncoder`: the user's rating row through the network."""

    def _encode(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        s = self.state
        h = self.act((ratings @ s["input_weight"][items] + s["input_bias"]).astype(np.float32))  # (H1,)
        for weight, bias in _layers(s, "hidden"):
            h = self.act((h @ weight.T + bias).astype(np.float32))
        return h

    def scores(self, users: np.ndarray, seen: Seen) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        codes = np.stack([self._encode(*_sorted(*seen(u))) for u in users.tolist()])  # (B, H)
        z = codes @ self.output_weight.T + self.output_bias  # (B, I)
        if self.row_bias:
            z = z + self.state["row_bias"][users][:, None]
        return self._output(z)

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        items, ratings = np.asarray(items, dtype=np.int64), np.asarray(ratings, dtype=np.float32)
        z = self._encode(items, ratings) @ self.output_weight.T + self.output_bias  # (I,)
        if self.row_bias and items.size:
            bias = self.state["row_bias"]
            spread = max(float(np.var(bias, ddof=1)), 1e-6) if bias.size > 1 else 1.0
            pseudo = np.float32(self.fold_in_l2) * self.noise_var / np.float32(spread)
            z = z + (ratings - self._output(z[items])).sum() / (np.float32(items.size) + pseudo)
        return self._output(z.astype(np.float32))

    def item_vectors(self) -> np.ndarray:
        return self.output_weight  # (I, H)


class ItemAutoEncoderForward(_AutoEncoderForward):
    """:class:`~movierec.models.autoencoder.ItemAutoEncoder` (I-AutoRec): every movie's saved code through the
    user's output unit; a new user's unit by the closed-form ridge fit with the saved prior."""

    needs_fit_state = True
    rows_are_users = False
    _parts: tuple[np.ndarray, ...] | None = None

    def _offset(self) -> np.ndarray:
        codes = self.state["item_codes"]
        return self.state["row_bias"] if self.row_bias else np.zeros(codes.shape[0], dtype=np.float32)

    def scores(self, users: np.ndarray, seen: Seen) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        z = self.state["item_codes"] @ self.output_weight[users].T + self.output_bias[users]  # (I, B)
        if self.row_bias:
            z = z + self.state["row_bias"][:, None]
        return self._output(np.ascontiguousarray(z.T))

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        items, ratings = np.asarray(items, dtype=np.int64), np.asarray(ratings, dtype=np.float32)
        design, offset, penalty, pull, ridge = self._fold_in_parts()
        target = ratings
        if self.sigmoid_output:
            frac = np.clip((ratings - self.rating_min) / (self.rating_max - self.rating_min), 0.01, 0.99)
            target = np.log(frac / (1 - frac)).astype(np.float32)
        a = design[items]  # (n, H+1)
        gram = a.T @ a  # then (. + penalty) + ridge, in place
        gram += penalty
        gram += ridge
        rhs = a.T @ (target - offset[items]) + pull
        x = np.linalg.solve(gram.astype(np.float32), rhs.astype(np.float32))  # (H+1,)
        return self._output((design @ x + offset).astype(np.float32))

    def _fold_in_parts(self) -> tuple[np.ndarray, ...]:
        """What every new user's fit shares, worked out for the first: the design ``[codes, 1]`` (I, H+1), the
        movies' offsets (I,), the prior's penalty (H+1, H+1) and pull (H+1,), and the small ridge (H+1, H+1)."""
        if self._parts is None:
            s = self.state
            codes = s["item_codes"]  # (I, H)
            design = np.concatenate([codes, np.ones((codes.shape[0], 1), np.float32)], 1)
            penalty = (self.fold_in_l2 * self.noise_var) * s["prior_precision"]
            ridge = np.float32(1e-6) * np.eye(design.shape[1], dtype=np.float32)
            self._parts = (design, self._offset(), penalty, penalty @ s["prior_mean"], ridge)
        return self._parts

    def item_vectors(self) -> np.ndarray:
        return self.state["item_codes"]  # (I, H)


class MultForward(Forward):
    """:class:`~movierec.models.multvae.MultVAE` / ``MultDAE``: softmax of the decoded code (the VAE's mean) of
    the user's picked movies (stars >= ``min_stars``), their 0/1 row divided by its length."""

    variational: ClassVar[bool] = True

    def code(self, items: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
        s = self.state
        cols = items[ratings >= float(self.config["min_stars"])]
        weight = np.float32(1.0 / np.sqrt(np.float32(max(cols.size, 1))))
        h = weight * s["input_weight"][cols].sum(0) + s["input_bias"]  # (H1,)
        for w, b in _layers(s, "encoder"):
            h = np.tanh(h.astype(np.float32)) @ w.T + b
        return (h[:h.shape[0] // 2] if self.variational else np.tanh(h)), 0.0  # (d,) the VAE's mean code

    def fits(self, n_users: int, n_items: int) -> bool:
        first = self.state["input_weight"].shape[-1]
        coded = self._chain("encoder", first)
        if coded is None or (self.variational and coded % 2):
            return False
        last = self._chain("decoder", coded // 2 if self.variational else coded)
        return last is not None and self._shapes_are({"input_weight": (n_items, first), "input_bias": (first,),
                                                      "output_weight": (n_items, last), "output_bias": (n_items,)})

    def readout(self, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        s = self.state
        for w, b in _layers(s, "decoder"):
            codes = np.tanh((codes @ w.T + b).astype(np.float32))
        return softmax((codes @ s["output_weight"].T + s["output_bias"]).astype(np.float32), axis=1)  # (B, I)

    def item_vectors(self) -> np.ndarray:
        return self.state["output_weight"]


class MultDAEForward(MultForward):
    variational = False


FORWARDS: dict[tuple[str, str], type[Forward]] = {
    ("rbm", "like"): LikeRBMForward,
    ("rbm", "rating"): RatingRBMForward,
    ("autoencoder", "user"): UserAutoEncoderForward,
    ("autoencoder", "item"): ItemAutoEncoderForward,
    ("autoencoder", "vae"): MultForward,
    ("autoencoder", "dae"): MultDAEForward,
}
"""The numpy passes by (model name, mode)."""

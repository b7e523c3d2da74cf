"""Reference rows of the tables: what a trivial encoding of a classifier, or no hashing at all,
scores on the same data (Sablayrolles, Douze, Usunier, Jegou, "How should we evaluate supervised
hashing?", ICASSP 2017).

* ``classifier_codes`` (shallow): scikit-learn logistic regression on the input features (the
  shallow methods' inputs), seeded; one multinomial model for single-label data, one binary model
  per label for multi-label data.
* ``classifier_codes_deep`` (deep): the deep methods' backbone and training loop with a C-unit
  linear head trained with cross-entropy (softmax for single-label data, a sigmoid per label with
  binary cross-entropy for multi-label data).

  The code of both is the classifier's prediction: the predicted class one-hot (single-label),
  or the predicted label set (multi-label: the labels of probability >= 0.5, and always the most
  probable one). Its length is the number of training label columns C, whatever ``n_bits`` says.
* ``unhashed_features``: no hashing. ``embed(X)`` returns the L2-normalised float features and the
  cell job ranks them by cosine similarity (``ranking = "cosine"``,
  :func:`benchmarks.metrics.cosine_per_query_ap`): the ceiling the codes compress.

Why the HashMethod contract does not apply in full: a hashing method returns ``n_bits`` bits; these
return C bits (classifier codes) or floats (unhashed features), so ``code_length`` says where their
length comes from (``"n_classes"`` or ``"float"``) and ``n_bits`` is accepted (0 = "set by the
data", the table's reference cells) and recorded, never used. The generic contract tests
(tests/test_contract.py) cannot hold for them and skip every class with a ``code_length``;
tests/test_reference_rows.py checks what does hold (determinism, validation, code format).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from methods.base import HashMethod, NotFittedError, n_items_of, register
from methods.deep.base import DeepHashMethod, TrainStep
from methods.deep.pointwise import softmax_ce_loss
from methods.search import LR, LogUniform

__all__ = ["ClassifierCodes", "ClassifierCodesDeep", "UnhashedFeatures", "prediction_codes"]

SABLAYROLLES = ("A. Sablayrolles, M. Douze, N. Usunier, H. Jegou, How should we evaluate "
                "supervised hashing?, ICASSP 2017")


def prediction_codes(scores: np.ndarray, multi_label: bool) -> np.ndarray:
    """Codes of a classifier's scores (N x C; logits or probabilities, monotone per column).

    Single-label: the one-hot of the arg-max. Multi-label: the labels with score >= ``0.5`` for
    probabilities (``0`` for logits: pass ``scores - threshold``), always including the arg-max.
    Ties in the arg-max: the lowest label index.
    """
    scores = np.asarray(scores)
    top = np.zeros(scores.shape, dtype=bool)
    top[np.arange(len(scores)), scores.argmax(axis=1)] = True
    return (top | (scores >= 0)) if multi_label else top


class _FromData(HashMethod):
    """Shared parts: ``n_bits`` recorded, not used; codes of C bits (see the module docstring)."""

    #: where the code length comes from: "n_classes" (C bits) or "float" (no binary code)
    code_length: ClassVar[str] = "n_classes"
    paper = SABLAYROLLES

    def _check_n_bits(self) -> None:
        if isinstance(self.n_bits, bool) or not isinstance(self.n_bits, (int, np.integer)) \
                or self.n_bits < 0:
            raise ValueError(f"n_bits must be an integer >= 0 (it is recorded, not used: the "
                             f"code length is set by the data), got {self.n_bits!r}")

    def _note_labels(self, Y: np.ndarray) -> None:
        empty = np.flatnonzero(Y.sum(0) == 0)
        if empty.size:
            raise ValueError(f"label columns {empty.tolist()} have no training item: a "
                             "classifier cannot learn them (drop them before fitting)")
        self.n_classes_ = Y.shape[1]
        self.multi_label_ = bool((Y.sum(1) != 1).any())

    def encode(self, X: Any) -> np.ndarray:
        """The predicted label set of each item: an N x C uint8 matrix of {0, 1}."""
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")
        X = self._check_input(X, fitting=False)
        codes = np.asarray(self._encode(X), dtype=bool)
        if codes.shape != (n_items_of(X), self.n_classes_):
            raise RuntimeError(f"{type(self).__name__}._encode returned shape {codes.shape}, "
                               f"expected {(n_items_of(X), self.n_classes_)}")
        return codes.astype(np.uint8)


@register("classifier_codes")
class ClassifierCodes(_FromData):
    """Reference: logistic regression on the features; its prediction is the code (C bits).

    ``C``: inverse regularisation strength, ``max_iter``: L-BFGS iterations (scikit-learn's
    ``LogisticRegression``, ``random_state=seed``). Multi-label data: one binary model per label
    (a label that every training item carries is predicted for every item).
    """

    kind = "shallow"
    input_kind = "features"
    search_space: ClassVar[dict[str, Any]] = {"C": LogUniform(1e-3, 1e2)}

    def __init__(self, n_bits: int = 0, seed: int = 0, *, C: float = 1.0,
                 max_iter: int = 1000) -> None:
        super().__init__(n_bits=n_bits, seed=seed)
        self.C = C
        self.max_iter = max_iter

    def _model(self):
        from sklearn.linear_model import LogisticRegression

        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        return LogisticRegression(C=float(self.C), max_iter=int(self.max_iter),
                                  random_state=int(self.seed))

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        self._note_labels(Y)
        if not self.multi_label_:
            self.models_ = [self._model().fit(X, Y.argmax(1))]
            return
        # one binary model per label; a constant column keeps its constant (no model to fit)
        self.models_ = [float(Y[0, c]) if Y[:, c].min() == Y[:, c].max()
                        else self._model().fit(X, Y[:, c]) for c in range(Y.shape[1])]

    def predict_proba(self, X: Any) -> np.ndarray:
        """N x C class (single-label) or per-label (multi-label) probabilities."""
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")
        X = self._check_input(X, fitting=False)
        if not self.multi_label_:
            model = self.models_[0]
            out = np.zeros((len(X), self.n_classes_))
            out[:, model.classes_] = model.predict_proba(X)
            return out
        return np.stack([np.full(len(X), m) if isinstance(m, float) else m.predict_proba(X)[:, 1]
                         for m in self.models_], axis=1)

    def _encode(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)
        return prediction_codes(proba - 0.5 if self.multi_label_ else proba, self.multi_label_)


@register("classifier_codes_deep")
class ClassifierCodesDeep(_FromData, DeepHashMethod):
    """Reference: the deep methods' backbone and training loop with a C-unit linear head and
    cross-entropy; its prediction is the code (C bits).

    Single-label: softmax cross-entropy (``methods.deep.pointwise.softmax_ce_loss``, term
    ``"ce"``); multi-label: binary cross-entropy of a sigmoid per label (term ``"bce"``). Head
    initialisation N(0, 0.01^2), bias 0 (the deep methods' hash layer). Every training option is
    :class:`~methods.deep.base.DeepHashMethod`'s.
    """

    search_space: ClassVar[dict[str, Any]] = {"lr": LR,
                                              "weight_decay": LogUniform(1e-6, 1e-2)}

    def __init__(self, n_bits: int = 0, seed: int = 0, **train_options: Any) -> None:
        DeepHashMethod.__init__(self, n_bits=n_bits, seed=seed, **train_options)

    test_params: ClassVar[dict[str, Any]] = {"backbone": "small_cnn", "epochs": 2,
                                             "batch_size": 32, "lr": 0.01, "device": "cpu",
                                             "progress": False}

    def _fit(self, X: Any, Y: np.ndarray) -> None:
        self._note_labels(Y)
        DeepHashMethod._fit(self, X, Y)

    def build_head(self, in_features: int, n_classes: int) -> nn.Module:
        layer = nn.Linear(in_features, n_classes)
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
        return layer

    def loss_terms(self, head: nn.Module, u: torch.Tensor, labels: torch.Tensor,
                   step: TrainStep) -> dict[str, torch.Tensor]:
        if self.multi_label_:
            return {"bce": nn.functional.binary_cross_entropy_with_logits(u, labels.to(u.dtype))}
        return {"ce": softmax_ce_loss(u, labels)}

    def codes_from_outputs(self, u: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(prediction_codes(u.numpy(), self.multi_label_))

    def convergence_report(self, codes: np.ndarray | None = None) -> dict[str, Any]:
        """The deep methods' loss checks; collapse = every item gets the same prediction."""
        report = DeepHashMethod.convergence_report(self, None)
        if report["converged"] and codes is not None and len(codes) > 1 \
                and (np.asarray(codes) == np.asarray(codes)[:1]).all():
            return {"converged": False, "reason": "collapsed: every item has the same prediction"}
        return report


@register("unhashed_features")
class UnhashedFeatures(_FromData):
    """Reference: no hashing; cosine ranking on the input features (the ceiling of the codes).

    ``embed(X)`` returns the L2-normalised features (float32); ``encode`` is not defined (there is
    no binary code), the cell job ranks ``embed`` outputs with
    :func:`benchmarks.metrics.cosine_per_query_ap`.
    """

    kind = "shallow"
    input_kind = "features"
    supervised = False
    code_length: ClassVar[str] = "float"
    #: how the cell job ranks this method's outputs
    ranking: ClassVar[str] = "cosine"

    def __init__(self, n_bits: int = 0, seed: int = 0) -> None:
        super().__init__(n_bits=n_bits, seed=seed)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.n_classes_ = Y.shape[1]

    def embed(self, X: Any) -> np.ndarray:
        """The features, each row scaled to unit L2 norm (float32; zero rows stay zero)."""
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")
        X = np.asarray(self._check_input(X, fitting=False), dtype=np.float32)
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        return X / np.where(norm > 0, norm, 1.0).astype(np.float32)

    def _encode(self, X: np.ndarray) -> np.ndarray:
        raise TypeError("unhashed_features has no binary code: rank embed(X) by cosine "
                        "similarity (benchmarks.metrics.cosine_per_query_ap)")

"""The history expert: a multinomial denoising autoencoder over a user's training items.

A user path sees the user token and one watched item; a strong collaborative model sees every item
the user watched. The expert is that model inside KGGLM: Mult-DAE (Liang et al., "Variational
Autoencoders for Collaborative Filtering", WWW 2018), the user's items (with dropout while training)
-> one ``tanh`` layer -> a softmax over all items. It reads the history only, never a free user
embedding, so it cannot memorise a user's training items, and it is trained on its own
(:func:`kgglm.train.expert.fit_history_expert`) because its objective (all of a user's items at
once) is not the path model's. Decoding adds ``history_weight * log p(item | history)`` to the
score of each *decoded* item (a product of experts): the ranking uses the whole history, while
every recommendation keeps the graph path that explains it.

With ``n_features`` (``history_expert_args.kg_features``) the expert also reads the knowledge graph:
an item's input and output vectors are its own plus the mean-scaled sum of the vectors of its KG
features (its neighbours over any relation, :meth:`kgglm.data.dataset.Dataset.item_features`),
``e_i = E_i + sum_{f in F(i)} U_f / sqrt(|F(i)|)``, so what a user's items share (a genre, an actor)
is learned once and reaches every item that has it, the way a content-aware factorisation does
(CKE, KDD 2016). The features are data, attached by :meth:`HistoryExpert.set_features`.

Memory grows with the interactions and the item-feature pairs: the encoder is an embedding bag over
the history entries and the feature sums are sparse products, never a dense users x items matrix.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class HistoryExpert(nn.Module):
    """Mult-DAE with one hidden layer: ``log_softmax(W2 tanh(W1 x / sqrt(|x|) + b1) + b2)``; with
    ``n_features``, ``W1`` and ``W2`` each add the items' KG-feature vectors (module docstring)."""

    def __init__(self, n_items: int, dim: int, dropout: float, n_features: int = 0) -> None:
        super().__init__()
        if n_items <= 0 or dim <= 0 or n_features < 0:
            raise ValueError(f"HistoryExpert needs n_items > 0, dim > 0 and n_features >= 0, "
                             f"got {n_items}, {dim}, {n_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"history expert dropout must be in [0, 1), got {dropout}")
        self.n_items, self.dropout, self.n_features = n_items, dropout, n_features
        self.enc = nn.EmbeddingBag(n_items, dim, mode="sum")
        self.enc_bias = nn.Parameter(torch.zeros(dim))
        self.dec = nn.Linear(dim, n_items)
        if n_features:
            self.feat_enc = nn.Parameter(torch.empty(n_features, dim))
            self.feat_dec = nn.Parameter(torch.empty(n_features, dim))
            # the item-feature pairs (item, feature) and their weights 1/sqrt(|F(item)|): data
            self.register_buffer("feat_index", torch.zeros(2, 0, dtype=torch.long), persistent=False)
            self.register_buffer("feat_value", torch.zeros(0), persistent=False)
        self.reset_parameters()
        # frozen but inside its own fit: the path model's optimiser and DDP (which would wait for
        # gradients the path loss never gives it) leave it alone
        self.requires_grad_(False)

    def reset_parameters(self) -> None:
        """Xavier weights and zero biases, as Mult-DAE (the GPT's N(0, 0.02) suits it less)."""
        nn.init.xavier_uniform_(self.enc.weight)
        nn.init.xavier_uniform_(self.dec.weight)
        nn.init.zeros_(self.enc_bias)
        nn.init.zeros_(self.dec.bias)
        if self.n_features:
            nn.init.xavier_uniform_(self.feat_enc)
            nn.init.xavier_uniform_(self.feat_dec)

    def set_features(self, items: torch.Tensor, features: torch.Tensor) -> None:
        """Attach the KG features: pairs ``(item in [0, n_items), feature in [0, n_features))``,
        (repeats count once). An expert built without features takes none."""
        items, features = (torch.as_tensor(a, dtype=torch.long).reshape(-1) for a in (items, features))
        if not self.n_features:
            raise ValueError("set_features: this history expert was built without KG features (n_features 0)")
        if items.shape != features.shape:
            raise ValueError(f"set_features: {items.numel()} items but {features.numel()} features")
        if items.numel() and not (0 <= int(items.min()) and int(items.max()) < self.n_items
                                  and 0 <= int(features.min()) and int(features.max()) < self.n_features):
            raise ValueError(f"set_features: pairs must lie in [0, {self.n_items}) x [0, {self.n_features}) "
                             f"(the expert was built for another dataset's graph?)")
        key = torch.unique(items * self.n_features + features)  # sorted and distinct: a coalesced matrix
        items, features = key // self.n_features, key % self.n_features
        device = self.dec.weight.device
        degree = torch.bincount(items, minlength=self.n_items).clamp_min(1).to(torch.float32)
        self.feat_index = torch.stack([items, features]).to(device)
        self.feat_value = degree[items].rsqrt().to(device)

    def _item_vectors(self, own: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """``own + A feature``: each item's vector plus its features' scaled sum (a sparse product)."""
        a = torch.sparse_coo_tensor(self.feat_index, self.feat_value.to(own.dtype), (self.n_items, self.n_features),
                                    check_invariants=False, is_coalesced=True)  # checked in set_features
        return own + torch.sparse.mm(a, feature)

    def forward(self, n_rows: int, row: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Item logits ``[n_rows, n_items]`` from history entries ``(row, item)``, grouped by row in
        increasing order (``item`` in ``[0, n_items)``). In training mode each entry is dropped with
        probability ``dropout`` (the survivors scaled by ``1 / (1 - dropout)``, as ``nn.Dropout``);
        the input is then divided by the square root of its sum (Mult-DAE's L2 normalisation of a
        binary vector)."""
        weight = torch.ones(items.shape, device=items.device, dtype=self.enc.weight.dtype)
        if self.training and self.dropout > 0:
            weight = F.dropout(weight, self.dropout, training=True)
        counts = torch.bincount(row, minlength=n_rows)
        norm = torch.zeros(n_rows, device=items.device, dtype=weight.dtype).index_add_(0, row, weight)
        weight = weight / norm.clamp_min(1.0).sqrt()[row]
        offsets = torch.cumsum(counts, 0) - counts
        if not self.n_features:
            hidden = torch.tanh(self.enc(items, offsets, per_sample_weights=weight) + self.enc_bias)
            return self.dec(hidden)
        enc = self._item_vectors(self.enc.weight, self.feat_enc)
        bag = F.embedding_bag(items, enc, offsets, mode="sum", per_sample_weights=weight)
        return F.linear(torch.tanh(bag + self.enc_bias), self._item_vectors(self.dec.weight, self.feat_dec),
                        self.dec.bias)

    def log_probs(self, n_rows: int, row: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[n_rows, n_items]`` float32 log-probabilities of every item."""
        return torch.log_softmax(self(n_rows, row, items).float(), dim=-1)

    def loss(self, n_rows: int, row: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mult-DAE's objective: the mean over rows of the summed negative log-likelihood of all the
        row's history items (the dropped ones included: the expert learns to fill them in)."""
        logp = self.log_probs(n_rows, row, items)
        return -logp[row, items].sum() / max(int(torch.unique(row).numel()), 1)

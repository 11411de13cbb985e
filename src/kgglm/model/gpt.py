"""The KGGLM decoder: a GPT-2 style transformer over knowledge-graph path tokens (nanoGPT-like).

Architecture (GPT-2): token + learned position embeddings, pre-LayerNorm blocks of causal
self-attention and a 4x GELU MLP, a final LayerNorm and an output projection tied to the token
embedding. KGGLM adds a token-type embedding (special / entity / relation) to every position when
``use_kg_token_types`` is on; the type of each token is looked up from a buffer indexed by the token
id, so training and generation use the same types without the caller passing them.

Generation uses a :class:`KVCache`; positions continue from ``cache.length``, and beam search
keeps/duplicates rows with :meth:`KVCache.reorder`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from kgglm.model.expert import HistoryExpert

IGNORE_INDEX = -100  # labels with this value do not contribute to the loss (padding)
EOS_ID = 2  # the [EOS] token of kgglm.paths.vocab (the model does not import the path layer)


@dataclass(frozen=True)
class ModelConfig:
    """Model hyper-parameters; the config-key fields are resolved by :func:`kgglm.settings.resolve`
    (their defaults in ``configs/overall.yaml`` only); the rest are fixed architecture constants."""

    vocab_size: int
    n_positions: int  # context length: path tokens + [BOS] + [EOS]
    embedding_size: int
    num_heads: int
    num_layers: int
    dropout: float
    use_kg_token_types: bool
    n_token_types: int = 3
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    # User-history conditioning (off by default; see KGGLM.set_user_history): the user token's input
    # embedding gets a projection of the mean embedding of the user's training items.
    user_history: bool = False
    history_dropout: float = 0.0  # share of history items hidden from each training row
    history_loss_weight: float = 0.0  # weight of the history expert's hidden-items loss
    history_items: int = 0  # items of the history expert's own output layer (0: tied item embeddings)
    # The Mult-DAE history expert (kgglm.model.expert; 0: none): its hidden size and input dropout.
    history_expert_dim: int = 0
    history_expert_dropout: float = 0.5
    # The expert also reads the items' KG features (history_expert_args.kg_features); how many distinct
    # features the dataset's graph has is set by the model builder, as history_items is.
    history_expert_kg: bool = False
    history_expert_features: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.history_dropout < 1.0:
            raise ValueError(f"history_dropout must be in [0, 1), got {self.history_dropout}")
        if self.history_loss_weight < 0:
            raise ValueError(f"history_loss_weight must be >= 0, got {self.history_loss_weight}")
        if self.history_expert_dim < 0:
            raise ValueError(f"history_expert_dim must be >= 0, got {self.history_expert_dim}")
        if self.history_expert_features < 0:
            raise ValueError(f"history_expert_features must be >= 0, got {self.history_expert_features}")
        if self.embedding_size % self.num_heads:
            raise ValueError(f"embedding_size ({self.embedding_size}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if self.vocab_size <= 0 or self.n_positions <= 0:
            raise ValueError("vocab_size and n_positions must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


class KVCache:
    """Per-layer key/value tensors ``[B, H, T, D]`` preallocated to ``capacity`` positions.

    ``length`` is the number of cached positions (the same for every row: generation advances
    all rows together). Preallocation avoids re-concatenating the whole cache at every step.
    """

    def __init__(self, num_layers: int, batch: int, num_heads: int, capacity: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, num_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.length = 0
        self.capacity = capacity

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new ``k, v`` ``[B, H, t, D]`` after the cached positions; return all keys/values.

        The caller advances ``length`` once per forward (after the last layer), see ``advance``.
        """
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions > capacity {self.capacity}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> "KVCache":
        """Select batch rows (in place): row ``i`` becomes old row ``index[i]``.

        ``index`` may repeat rows (beam expansion) or drop them (finished beams), so the batch
        size can change. Only the filled ``length`` positions are copied. Returns ``self``.
        """
        index = index.to(self.keys[0].device, torch.long)
        n = self.length
        for i in range(len(self.keys)):
            for buf in (self.keys, self.values):
                old = buf[i]
                new = old.new_empty((index.shape[0],) + tuple(old.shape[1:]))
                new[:, :, :n] = old[:, :, :n].index_select(0, index)
                buf[i] = new
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.embedding_size
        self.n_head = config.num_heads
        self.c_attn = nn.Linear(c, 3 * c)  # q, k, v in one matmul
        self.c_proj = nn.Linear(c, c)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(layer, k, v)
        p = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif t == 1:
            # a single new token may attend to every cached position: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            # query i sits at absolute position past+i and sees keys 0..past+i
            qpos = torch.arange(past, past + t, device=x.device).unsqueeze(1)
            mask = torch.arange(past + t, device=x.device).unsqueeze(0) <= qpos
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.embedding_size
        self.c_fc = nn.Linear(c, 4 * c)
        self.c_proj = nn.Linear(4 * c, c)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class KGGLM(nn.Module):
    """GPT-2 decoder over path tokens with an optional KG token-type embedding.

    ``token_types[v]`` (0 special, 1 entity, 2 relation) is the type of token ``v``; it is a
    buffer (not saved in the state dict: it is derived from the vocabulary).
    """

    def __init__(self, config: ModelConfig, token_types: torch.Tensor) -> None:
        super().__init__()
        token_types = torch.as_tensor(token_types, dtype=torch.long)
        if token_types.shape != (config.vocab_size,):
            raise ValueError(f"token_types must have shape ({config.vocab_size},), got {tuple(token_types.shape)}")
        if token_types.numel() and (token_types.min() < 0 or token_types.max() >= config.n_token_types):
            raise ValueError(f"token_types must be in [0, {config.n_token_types})")
        self.config = config
        c = config.embedding_size
        self.wte = nn.Embedding(config.vocab_size, c)
        self.wpe = nn.Embedding(config.n_positions, c)
        self.wtt = nn.Embedding(config.n_token_types, c) if config.use_kg_token_types else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(c, eps=config.layer_norm_epsilon)
        self.register_buffer("token_types", token_types.clone(), persistent=False)
        if config.user_history or config.history_expert_dim:
            # the users' training items: data, attached by set_user_history
            self.register_buffer("hist_indptr", torch.zeros(1, dtype=torch.long), persistent=False)
            self.register_buffer("hist_tokens", torch.zeros(0, dtype=torch.long), persistent=False)
            self.user_range = (0, 0)  # token ids [lo, hi) of users
            self.item_range = (0, 0)  # token ids [lo, hi) of items
        if config.user_history:
            # history -> user-token offset
            self.hproj = nn.Linear(c, c, bias=False)
            # the history expert: the user's items -> a distribution over all items, from the history
            # alone (as Mult-DAE; a free user embedding would just memorise the training items)
            self.hhead = nn.Sequential(nn.Linear(c, c), nn.Tanh(), nn.Linear(c, c))
            # its own item output layer with a bias (popularity), as Mult-DAE's decoder; the path
            # model's tied item embeddings serve a different distribution
            self.hout = nn.Linear(c, config.history_items) if config.history_items else None
        if config.history_expert_dim and config.history_items <= 0:
            raise ValueError("a history expert (history_expert_dim > 0) needs history_items > 0")
        self.expert = (HistoryExpert(config.history_items, config.history_expert_dim, config.history_expert_dropout,
                                     config.history_expert_features) if config.history_expert_dim else None)
        self.apply(self._init_weights)
        if self.expert is not None:
            self.expert.reset_parameters()  # its own (Mult-DAE) initialisation
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream stays O(1)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, config.initializer_range / math.sqrt(2 * config.num_layers))

    def train(self, mode: bool = True) -> KGGLM:
        """``nn.Module.train``, except that the history expert stays in eval mode: its input dropout
        belongs to its own fit (:func:`kgglm.train.expert.fit_history_expert` switches it), never to
        the path model's training or to scoring after it."""
        super().train(mode)
        if self.expert is not None:
            self.expert.eval()
        return self

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def output_embeddings(self) -> torch.Tensor:
        """The output projection ``[V, C]`` (tied to the token embedding): logits = h @ W.T.

        Decoding uses it with :meth:`hidden_states` to score only the graph-legal tokens."""
        return self.wte.weight

    def new_cache(self, batch: int, capacity: int | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache for ``batch`` rows (capacity defaults to the context length)."""
        cfg = self.config
        return KVCache(cfg.num_layers, batch, cfg.num_heads, capacity or cfg.n_positions,
                       cfg.embedding_size // cfg.num_heads, self.wte.weight.device,
                       dtype or self.wte.weight.dtype)

    def set_user_history(self, indptr: torch.Tensor, tokens: torch.Tensor, user_range: tuple[int, int],
                         item_range: tuple[int, int]) -> None:
        """Attach each user's training items: user ``u`` (token ``user_range[0] + u``) has the item
        tokens ``tokens[indptr[u]:indptr[u + 1]]``. Give training interactions only: the history is
        the model's input at test time too."""
        if not (self.config.user_history or self.config.history_expert_dim):
            raise ValueError("set_user_history needs a model built with user_history or a history expert")
        indptr = torch.as_tensor(indptr, dtype=torch.long)
        if indptr.numel() != user_range[1] - user_range[0] + 1:
            raise ValueError(f"indptr has {indptr.numel()} entries, expected {user_range[1] - user_range[0] + 1}")
        device = self.wte.weight.device
        self.hist_indptr = indptr.to(device)
        self.hist_tokens = torch.as_tensor(tokens, dtype=torch.long).to(device)
        self.user_range = (int(user_range[0]), int(user_range[1]))
        self.item_range = (int(item_range[0]), int(item_range[1]))

    def _uses_history(self) -> bool:
        return self.config.user_history and self.hist_tokens.numel() > 0

    def history_entries(self, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, token)`` of every attached history item of the tokens ``first`` (none unless a
        user), grouped by row in increasing order."""
        lo, hi = self.user_range
        is_user = (first >= lo) & (first < hi)
        user = torch.where(is_user, first - lo, 0)
        start = self.hist_indptr[user]
        counts = torch.where(is_user, self.hist_indptr[user + 1] - start, 0)
        row = torch.repeat_interleave(torch.arange(first.shape[0], device=first.device), counts)
        offsets = torch.cumsum(counts, 0) - counts
        toks = self.hist_tokens[start[row] + torch.arange(row.shape[0], device=first.device) - offsets[row]]
        return row, toks

    def _history(self, first: torch.Tensor, exclude: torch.Tensor | None):
        """History offsets ``[R, C]`` for the tokens ``first`` at position 1 (zero unless a user),
        and ``(row, token, hidden)`` of every history entry (``hidden``: not shown to the model).

        Training rows hide their own target item (else predicting it is copying) and a random
        ``history_dropout`` share of the rest; the offset is ``hproj(sum of shown embeddings / sqrt(n))``."""
        row, toks = self.history_entries(first)
        hidden = torch.zeros(toks.shape, dtype=torch.bool, device=toks.device)
        if exclude is not None:
            hidden |= toks == exclude[row]
        if self.training and self.config.history_dropout > 0:
            hidden |= torch.rand(toks.shape, device=toks.device) < self.config.history_dropout
        weight = self.wte.weight
        shown = (~hidden).to(weight.dtype)
        n = torch.zeros(first.shape[0], device=first.device, dtype=weight.dtype).index_add_(0, row, shown)
        total = torch.zeros(first.shape[0], self.config.embedding_size, device=first.device,
                            dtype=weight.dtype).index_add_(0, row, self.wte(toks) * shown[:, None])
        summary = total / n.clamp_min(1.0).sqrt().unsqueeze(1)
        return self.hproj(summary), (row, toks, hidden, summary)

    def _embed(self, input_ids: torch.Tensor, past: int, exclude: torch.Tensor | None = None):
        """Input embeddings ``[B, T, C]`` and the history entries (``None`` without history)."""
        t = input_ids.shape[1]
        pos = torch.arange(past, past + t, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        if self.wtt is not None:
            x = x + self.wtt(self.token_types[input_ids])
        hist = None
        if past == 0 and t >= 2 and self._uses_history():
            offset, hist = self._history(input_ids[:, 1], exclude)
            x = torch.cat([x[:, :1], x[:, 1:2] + offset.unsqueeze(1).to(x.dtype), x[:, 2:]], dim=1)
        return self.drop(x), hist

    def _blocks(self, x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return self.ln_f(x)

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final (layer-normed) hidden states ``[B, T, C]``; writes into ``cache`` when given."""
        past = cache.length if cache is not None else 0
        if past + input_ids.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence of {past + input_ids.shape[1]} positions exceeds "
                             f"n_positions={self.config.n_positions}")
        return self._blocks(self._embed(input_ids, past)[0], cache)

    def _item_log_probs(self, state: torch.Tensor) -> torch.Tensor:
        lo, hi = self.item_range
        return torch.log_softmax(state.float() @ self.wte.weight[lo:hi].float().T, dim=-1)

    def history_log_probs(self, user_tokens: torch.Tensor) -> torch.Tensor | None:
        """``[B, n_items]`` log-probabilities of every item under the history expert, given each
        user's whole attached history (the distribution the history loss fits), or ``None`` when the
        model was not trained for it. The Mult-DAE expert (``history_expert_dim``) when there is one,
        else the user-position expert of ``history_loss_weight``."""
        if self.expert is not None and self.hist_tokens.numel() > 0:
            row, toks = self.history_entries(user_tokens)
            return self.expert.log_probs(user_tokens.shape[0], row, toks - self.item_range[0])
        if not self._uses_history() or self.config.history_loss_weight == 0:
            return None
        return self._expert_log_probs(self._history(user_tokens, None)[1][3])

    def _expert_log_probs(self, summary: torch.Tensor) -> torch.Tensor:
        z = self.hhead(summary)
        if self.hout is not None:
            return torch.log_softmax(self.hout(z).float(), dim=-1)
        return self._item_log_probs(z)

    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None,
                use_cache: bool = False) -> tuple[torch.Tensor, KVCache | None]:
        """Logits ``[B, T, V]`` for ``input_ids [B, T]`` and the cache (``None`` unless used).

        With ``past_key_values`` the new tokens continue after the cached positions (the cache is
        updated in place and returned). ``use_cache`` without a cache starts a new one.
        """
        cache = past_key_values
        if cache is None and use_cache:
            kind = input_ids.device.type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
            cache = self.new_cache(input_ids.shape[0], dtype=dtype)
        x = self.hidden_states(input_ids, cache)
        logits = F.linear(x, self.wte.weight)  # tied output embedding
        return logits, (cache if (use_cache or past_key_values is not None) else None)

    def loss(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
             output_slices: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy; ``labels`` default to ``input_ids`` shifted, PAD ignored.

        ``output_slices`` (``[T-1, 2]`` token ranges ``[lo, hi)``, one per predicting position, see
        :meth:`kgglm.paths.vocab.Vocabulary.output_slices`) normalises each position's softmax over
        the tokens the path grammar allows there (relations after a node, nodes after a relation,
        items where a user path has an item) instead of the whole vocabulary. Decoding renormalises
        over the graph-legal tokens, a subset of each range, so scores stay consistent; training gets
        several times cheaper because the vocabulary-wide output layer is most of the cost.

        The output projection goes through the fused :class:`LinearCrossEntropy`. On CPU only
        labelled positions are projected (selecting them syncs, which is free there); on GPU ignored
        rows are masked instead, avoiding a sync.
        """
        if labels is None:
            labels = next_token_labels(input_ids)
        exclude = _path_targets(input_ids) if self._uses_history() else None
        x, hist = self._embed(input_ids, 0, exclude)
        h = self._blocks(x, None)
        loss = self._path_loss(h[:, :-1], labels[:, :-1], output_slices)  # the last position has no target
        if hist is not None and self.config.history_loss_weight > 0:
            loss = loss + self.config.history_loss_weight * self._history_loss(hist)
        return loss

    def _history_loss(self, hist) -> torch.Tensor:
        """Mean over rows of the mean NLL of each row's hidden history items under the history
        expert, from the items it was shown (a multinomial denoising autoencoder, as Mult-DAE)."""
        row, toks, hidden, summary = hist
        if not bool(hidden.any()):
            return summary.new_zeros((), dtype=torch.float32)
        logp = self._expert_log_probs(summary)
        r, item = row[hidden], toks[hidden] - self.item_range[0]
        n = torch.zeros(summary.shape[0], device=r.device).index_add_(0, r, torch.ones(r.shape, device=r.device))
        nll = torch.zeros_like(n).index_add_(0, r, -logp[r, item])
        has = n > 0
        return (nll[has] / n[has]).mean()

    def _path_loss(self, x: torch.Tensor, labels: torch.Tensor, output_slices: torch.Tensor | None) -> torch.Tensor:
        """Next-token cross-entropy of hidden states ``x`` against ``labels`` (see :meth:`loss`)."""
        if output_slices is None:
            return self._cross_entropy(x.flatten(0, 1), labels.flatten(), self.wte.weight)
        groups: dict[tuple[int, int], list[int]] = {}
        for pos, (lo, hi) in enumerate(output_slices[: x.shape[1]].tolist()):
            groups.setdefault((lo, hi), []).append(pos)
        total, count = x.new_zeros((), dtype=torch.float32), labels.new_zeros(())
        for (lo, hi), pos in groups.items():
            idx = torch.tensor(pos, device=x.device)
            y = labels[:, idx].flatten()
            n = (y != IGNORE_INDEX).sum()
            y = torch.where(y == IGNORE_INDEX, y, y - lo)
            total = total + self._cross_entropy(x[:, idx].flatten(0, 1), y, self.wte.weight[lo:hi]) * n
            count = count + n
        return total / count.clamp_min(1)

    @staticmethod
    def _cross_entropy(x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            keep = labels != IGNORE_INDEX
            x, labels = x[keep], labels[keep]
        if torch.is_grad_enabled():
            return LinearCrossEntropy.apply(x, weight, labels)
        return F.cross_entropy(F.linear(x, weight).float(), labels, ignore_index=IGNORE_INDEX)


class LinearCrossEntropy(torch.autograd.Function):
    """``cross_entropy(h @ w.T, y, ignore_index=-100)`` with its gradient computed in forward.

    Mathematically the same as the two-step version, but the ``[N, V]`` logits are processed a
    chunk at a time and turned into the gradient in place: over a large vocabulary this output
    layer is most of the training cost, and the separate log-softmax backward passes (and their
    memory) go away. Matmuls run in ``h``'s dtype (bf16 under autocast), softmax in float32.
    """

    CHUNK = 4096  # rows per chunk (bounds the [CHUNK, V] float32 scratch)

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        acc = torch.promote_types(h.dtype, torch.float32)
        weight = (labels != IGNORE_INDEX).to(acc)  # 0 for ignored rows
        safe = labels.clamp_min(0)
        n = weight.sum().clamp_min(1.0)
        with torch.autocast(h.device.type, enabled=False):
            wc = w.to(h.dtype)
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(w.shape, dtype=acc, device=w.device)
            total = torch.zeros((), dtype=acc, device=h.device)
            for s in range(0, h.shape[0], LinearCrossEntropy.CHUNK):
                e = min(s + LinearCrossEntropy.CHUNK, h.shape[0])
                hc, yc, wt = h[s:e], safe[s:e], weight[s:e, None]
                logp = torch.log_softmax((hc @ wc.T).to(acc), dim=1)
                total -= (logp.gather(1, yc[:, None]) * wt).sum()
                probs = logp.exp_()  # softmax, in place
                probs[torch.arange(e - s, device=h.device), yc] -= 1.0  # d loss_i / d logits_i
                g = probs.to(h.dtype)
                grad_h[s:e] = (g @ wc) * (wt / n).to(h.dtype)  # ignored rows get zero gradient
                hw = (hc * wt.to(h.dtype)).to(g.dtype)
                if g.dtype == acc:
                    grad_w.addmm_(g.T, hw)
                else:
                    grad_w += g.T @ hw
            grad_w /= n
        ctx.save_for_backward(grad_h, grad_w.to(w.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None


def _path_targets(input_ids: torch.Tensor) -> torch.Tensor:
    """Each row's last node (the token before ``[EOS]``, or the last token without one): the item a
    user path predicts, hidden from that row's history."""
    is_eos = input_ids == EOS_ID
    end = torch.where(is_eos.any(1), is_eos.int().argmax(1), input_ids.shape[1]) - 1
    return input_ids.gather(1, end.clamp_min(0).unsqueeze(1)).squeeze(1)


def next_token_labels(input_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Labels for causal LM training: position t predicts token t+1; PAD and the last position -> -100."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    nxt = input_ids[:, 1:]
    labels[:, :-1] = torch.where(nxt == pad_id, torch.full_like(nxt, IGNORE_INDEX), nxt)
    return labels

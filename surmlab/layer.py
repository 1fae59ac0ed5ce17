"""``SurmLinear``: one wrapper around a frozen linear layer serving every structure family.

The base is an ``nn.Linear`` or a Hugging Face ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``: the
same map with its weight stored transposed, ``in x out``); ``S`` is always ``out x in`` and is transposed
where it meets a ``Conv1D`` weight (merge, the weight-space product, the state dict).

LoRA mode adds ``alpha * S x`` to the layer output, where ``S`` may cover only some row slices of
the weight (the q and v thirds of a fused qkv projection). Adapter mode replaces the output ``h``
with ``h + act(S h) + b``. Merge, unmerge, dtype handling and the choice between the activation-space
and weight-space products live here once, for all families.

State dicts (``model.state_dict()``, ``save_pretrained``, Trainer and accelerate checkpoints) keep a
LoRA-mode layer's weight under its original key, holding the *effective* weight ``W + alpha S``, so
that the plain model class loads any of them as the fine-tuned model. The pristine base weight
travels as ``base_layer.weight`` next to the updates while the layer is unmerged; a merged layer
writes no ``base_layer.weight``, and loading such a state dict marks the layer merged, so the update
is never applied twice.

Named adapters: the layer's own update is the adapter ``adapter_name`` (``"default"``); further LoRA-mode
adapters live in ``extra`` (``AdapterSlot``: the same fields) with their parameters under
``extra.<name>.updates...``. The forward adds every *active* one: ``(W + sum_i alpha_i S_i) x``; ``merge(names)``
folds named active ones into ``W``. With only the own adapter active the single-adapter code path runs unchanged.

``nn.MultiheadAttention`` reads its fused q, k, v projection as bare Parameters; ``attach_in_proj`` (end of this
file) moves them into a child ``in_proj`` that a ``SurmLinear`` wraps, read through by the attention.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .structures import make

ACTIVATION_FUNCTIONS = {"gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "identity": lambda t: t}

# The ``auto`` product choice (``SurmLinear.use_dense``) compares two costs in dense-matmul flops:
#   activation space: "flop" x the families' ``activation_flops`` (x 3 when training: the forward and the
#     backward's two products). The FFT products are memory-bound, hence worth many matmul flops each;
#   weight space: a fixed cost per weight entry ("setup_*": materialise S, fold it into W, and when training
#     back-propagate through ``dense()``) plus one matmul's worth per extra dense product, e.g. the weight
#     gradient dy^T x (2 x tokens x out x in) that a frozen W never needs.
# The CPU values are fitted by ``python -m benchmarks.calibrate`` (benchmarks/README.md: the fit picks the
# faster path in most cases and loses ~1-3% of the time against always picking right); the CUDA values are
# estimates (a matmul runs far closer to peak than FFTs do there), not measured: no GPU was available.
# Weight classes of quantisation libraries whose storage is not the (out, in) float matrix (bitsandbytes).
PACKED_WEIGHTS = ("Params4bit", "Int8Params")

# ``init="noise"``: the standard deviation of the draws replacing each family's zero-initialised parameters.
NOISE_STD = 1e-3

FFT_FLOP_COST: dict[str, dict[str, float]] = {
    "cpu": {"flop": 32.0, "setup_train": 4096.0, "setup_infer": 1024.0},
    "cuda": {"flop": 20.0, "setup_train": 64.0, "setup_infer": 16.0},
}


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` if transformers is loaded (a model holding one has loaded it), else ``None``."""
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def is_transposed(layer: nn.Module) -> bool:
    """Whether ``layer`` stores its weight as ``in x out`` (a Hugging Face ``Conv1D``)."""
    conv1d = conv1d_class()
    return conv1d is not None and isinstance(layer, conv1d)


def is_linear(layer: nn.Module) -> bool:
    """``nn.Linear`` and Hugging Face ``Conv1D``: what ``all-linear`` and the presets reach."""
    return isinstance(layer, nn.Linear) or is_transposed(layer)


def is_adaptable(layer: nn.Module) -> bool:
    """The layers SurmLinear wraps: the linear ones and ``nn.Embedding`` (named explicitly)."""
    return is_linear(layer) or isinstance(layer, nn.Embedding | nn.Conv2d)


DEFAULT_ADAPTER = "default"


def init_noise(updates: nn.ModuleDict) -> None:
    """Draw every parameter a family starts at zero (the factor that makes ``S = 0``) from ``N(0, NOISE_STD^2)``."""
    with torch.no_grad():
        for update in updates.values():
            for p in update.parameters():
                if not p.any():
                    p.normal_(0.0, NOISE_STD)


class AdapterSlot(nn.Module):
    """A further named LoRA-mode adapter on a ``SurmLinear``: the fields the layer keeps for its own one."""

    mode = "lora"
    adapter_bias = None

    def __init__(
        self,
        updates: nn.ModuleDict,
        slices: Sequence[tuple[str, int, int]],
        alpha: float,
        product: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.updates, self.slices, self.alpha, self.product = updates, list(slices), alpha, product
        self.dropout = nn.Dropout(dropout) if dropout else None


def features(layer: nn.Module) -> tuple[int, int]:
    """``(out_features, in_features)`` of an adaptable layer, whatever its weight layout; an embedding's table
    ``(num_embeddings, embedding_dim)`` is the ``out x in`` matrix its update ``S`` has the shape of."""
    if isinstance(layer, nn.Embedding):
        return layer.num_embeddings, layer.embedding_dim
    if isinstance(layer, nn.Conv2d):  # S acts on the flattened kernel: out x (in / groups * kh * kw)
        return layer.out_channels, layer.weight[0].numel()
    if is_transposed(layer):
        return layer.nf, layer.weight.shape[0]
    return layer.out_features, layer.in_features


class SurmLinear(nn.Module):
    """A frozen ``base_layer`` plus structured updates, one per row slice ``(name, start, stop)``."""

    def __init__(
        self,
        base_layer: nn.Module,
        family: str,
        hyper: dict,
        mode: str = "lora",
        slices: Sequence[tuple[str, int, int]] | None = None,
        alpha: float = 1.0,
        activation: str = "gelu",
        product: str = "auto",
        dropout: float = 0.0,
        init: str = "zero",
        adapter_name: str = DEFAULT_ADAPTER,
    ) -> None:
        super().__init__()
        self.adapter_name = adapter_name
        self.active: tuple[str, ...] = (adapter_name,)  # the adapters the forward adds, in order
        self._merged_names: list[str] = []  # the adapters folded into base_layer.weight, in order
        self.base_layer = base_layer
        self.mode, self.alpha, self.product, self.activation = mode, alpha, product, activation
        self.transposed = is_transposed(base_layer)
        # An embedding's update is on its table: lookups read rows of W + sum_i alpha_i S_i (no input dropout).
        self.embedding = isinstance(base_layer, nn.Embedding)
        # A Conv2d's update is on its flattened kernel (out x in*kh*kw): the convolution runs with W + sum alpha_i S_i.
        self.conv = isinstance(base_layer, nn.Conv2d)
        if (self.embedding or self.conv) and mode != "lora":
            kind = type(base_layer).__name__
            raise ValueError(f"an {kind} takes LoRA-mode updates (on its weight), not adapter mode")
        self._out_features, self._in_features = features(base_layer)
        # Dropout on the update's input only (LoRA's lora_dropout); at 0 no module exists, so no RNG is drawn.
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.merged = False
        # Set for a layer whose parent reads ``.weight`` instead of calling it (nn.MultiheadAttention's out_proj):
        # ``weight`` is then the effective ``W + sum alpha_i S_i`` (differentiable), which is what the parent uses.
        self.read_by_parent = False
        self.disabled = False  # surmlab.disable_adapter: the forward computes the base layer alone
        # merge()/unmerge() change the base weight in place; a forward in another thread must see the
        # weight and the ``merged`` flag change together, so both sides hold this lock.
        self._merge_lock = threading.RLock()
        self._warned_merged = False
        out_features, in_features = self._out_features, self._in_features
        if mode == "adapter":
            self.slices = [("adapter", 0, out_features)]
            self.updates = nn.ModuleDict({"adapter": make(family, out_features, out_features, **hyper)})
            self.adapter_bias = nn.Parameter(torch.zeros(out_features, device=base_layer.weight.device))
        else:
            self.slices = list(slices or [("full", 0, out_features)])
            self.updates = nn.ModuleDict(
                {name: make(family, in_features, stop - start, **hyper) for name, start, stop in self.slices}
            )
            self.adapter_bias = None
        # Update parameters stay fp32 whatever the base dtype (FFT islands); activations follow x.
        self.updates.to(device=base_layer.weight.device)
        if init == "noise":
            init_noise(self.updates)
        self.extra = nn.ModuleDict()  # further named adapters (AdapterSlot), LoRA mode only
        self.register_state_dict_post_hook(_plain_keys)
        self.register_load_state_dict_pre_hook(_from_plain_keys)

    # -- named adapters ------------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        """Whether any adapter is folded into the base weight (setting ``True`` marks every active one merged)."""
        return bool(self._merged_names)

    @merged.setter
    def merged(self, value: bool) -> None:
        self._merged_names = list(self.active) if value else []

    @property
    def merged_names(self) -> tuple[str, ...]:
        return tuple(self._merged_names)

    @property
    def adapter_names(self) -> list[str]:
        return [self.adapter_name, *self.extra.keys()]

    def slot(self, name: str | None = None) -> nn.Module:
        """The adapter ``name`` (``None``: the layer's own): ``self`` or an ``AdapterSlot``."""
        if name is None or name == self.adapter_name:
            return self
        if name not in self.extra:
            raise KeyError(f"adapter {name!r} is not on this layer; it has {self.adapter_names}")
        return self.extra[name]

    def add_adapter(
        self,
        name: str,
        family: str,
        hyper: dict,
        slices: Sequence[tuple[str, int, int]] | None = None,
        alpha: float = 1.0,
        product: str = "auto",
        dropout: float = 0.0,
        init: str = "zero",
    ) -> None:
        """Add a LoRA-mode adapter ``name`` beside the existing ones, inactive (``set_active`` turns it on)."""
        if self.mode != "lora":
            raise ValueError(
                f"adapter {name!r}: this layer holds {self.adapter_names} in adapter mode (h + act(S h) + b), "
                "which does not stack; only LoRA-mode adapters share a layer"
            )
        if name in self.adapter_names:
            raise ValueError(f"adapter {name!r} is already on this layer ({self.adapter_names})")
        slices = list(slices or [("full", 0, self.out_features)])
        updates = nn.ModuleDict({s: make(family, self.in_features, stop - start, **hyper) for s, start, stop in slices})
        updates.to(device=self.base_layer.weight.device)
        if init == "noise":
            init_noise(updates)
        self.extra[name] = AdapterSlot(updates, slices, alpha, product, dropout)

    def remove_adapter(self, name: str) -> None:
        """Drop adapter ``name`` (unmerged); the layer's own one is replaced by the next extra adapter."""
        if name in self._merged_names:
            raise ValueError(f"adapter {name!r} is merged into the weight; unmerge() first")
        if len(self.adapter_names) == 1:
            raise ValueError(f"adapter {name!r} is the layer's only one: unwrap the layer instead")
        self.active = tuple(n for n in self.active if n != name)
        if name != self.adapter_name:
            del self.extra[name]
            return
        successor = next(iter(self.extra.keys()))
        slot = self.extra[successor]
        del self.extra[successor]
        self.updates, self.slices, self.alpha, self.product = slot.updates, slot.slices, slot.alpha, slot.product
        self.dropout, self.adapter_name = slot.dropout, successor

    def set_active(self, names: Sequence[str]) -> None:
        """Make the given adapters of this layer (others are ignored) the ones the forward adds."""
        if self._merged_names:
            raise ValueError(f"cannot change the active adapters while {self._merged_names} are merged; unmerge()")
        self.active = tuple(n for n in names if n in self.adapter_names)

    @property
    def in_features(self) -> int:
        return self._in_features

    @property
    def out_features(self) -> int:
        return self._out_features

    @property
    def weight(self) -> torch.Tensor:  # code that reads layer.weight (e.g. dtype probes) keeps working
        weight = self.base_layer.weight
        if not self.read_by_parent or self.disabled:
            return weight
        for name in self.active:
            if name not in self._merged_names:
                weight = weight + self._stored_delta(name)
        return weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)  # an nn.Embedding has none

    # -- products ----------------------------------------------------------------------------------
    def _rows(
        self, parts: dict[str, torch.Tensor], like: torch.Tensor, slices: Sequence[tuple[str, int, int]] | None = None
    ) -> torch.Tensor:
        """Stack per-slice results along the last dim of the output, zeros where nothing is adapted."""
        pieces, cursor = [], 0
        for name, start, stop in self.slices if slices is None else slices:
            if start > cursor:
                pieces.append(like.new_zeros(*like.shape[:-1], start - cursor))
            pieces.append(parts[name])
            cursor = stop
        if cursor < self.out_features:
            pieces.append(like.new_zeros(*like.shape[:-1], self.out_features - cursor))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def delta_weight(self, name: str | None = None) -> torch.Tensor:
        """``alpha * S`` of adapter ``name`` (``None``: the layer's own) as an ``(out, in)`` fp32 matrix (LoRA mode)."""
        if self.mode != "lora":
            raise ValueError("adapter mode has no weight delta: act(S h) is not linear")
        slot = self.slot(name)
        parts = {s: update.dense().T for s, update in slot.updates.items()}  # (in, rows)
        ref = next(iter(parts.values()))
        return slot.alpha * self._rows(parts, ref, slot.slices).T

    def _stored_delta(self, name: str | None = None) -> torch.Tensor:
        """``alpha * S`` in the base weight's own layout and dtype (transposed for a ``Conv1D``)."""
        delta = self.delta_weight(name)
        weight = self.base_layer.weight
        return (delta.T if self.transposed else delta).reshape(weight.shape).to(weight.dtype)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The base layer's map with ``weight`` (in its stored layout) in place of its own."""
        return F.linear(x, weight.T if self.transposed else weight, self.base_layer.bias)

    def use_dense(self, x: torch.Tensor, slot: nn.Module | None = None) -> bool:
        """Pick the product: ``fft`` keeps S implicit; ``dense`` materialises it (see ``FFT_FLOP_COST``)."""
        slot = self if slot is None else slot
        if self.weight_blocker() is not None:
            return False  # a quantised weight cannot take S added to it: activation space only
        if slot.product != "auto":
            return slot.product == "dense"
        cost = FFT_FLOP_COST.get(x.device.type, FFT_FLOP_COST["cuda"])
        tokens = x.numel() // x.shape[-1]
        training = torch.is_grad_enabled() and any(p.requires_grad for p in slot.updates.parameters())
        passes = 3.0 if training else 1.0  # the forward product, and the backward's two
        structured = passes * cost["flop"] * sum(u.activation_flops(tokens) for u in slot.updates.values())
        size = self.out_features * self.in_features
        # Weight space: in adapter mode F.linear(h, S) is a full matmul in every pass; in LoRA mode folding S
        # into W adds one when training, the weight gradient dy^T x that a frozen W never needs.
        matmuls = passes if self.mode == "adapter" else float(training)
        setup = cost["setup_train"] if training else cost["setup_infer"]
        return matmuls * 2.0 * tokens * size + setup * size < structured

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._merge_lock:
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        # An empty batch takes the weight-space product: FFT kernels reject zero-length inputs.
        empty = x.numel() == 0
        if self.disabled:
            return base(x)
        if self.embedding:
            return self._embed(x)
        if self.conv:
            return self.base_layer._conv_forward(x, self._effective_weight(), self.base_layer.bias)
        if self.active != (self.adapter_name,):
            return self._forward_stacked(x, empty)
        drop = self.dropout is not None and self.training
        if self.mode == "adapter":
            h = base(x)
            update = self.updates["adapter"]
            u = self.dropout(h) if drop else h
            s = F.linear(u, update.dense().to(h.dtype)) if empty or self.use_dense(h) else update(u)
            return h + ACTIVATION_FUNCTIONS[self.activation](s) + self.adapter_bias.to(h.dtype)
        if self.merged:
            if self.training and torch.is_grad_enabled() and not self._warned_merged:
                self._warned_merged = True
                warnings.warn(
                    "training a merged SURM layer: its update is folded into the frozen weight and gets no "
                    "gradient; call unmerge() (surmlab.unmerge(model)) before training",
                    stacklevel=2,
                )
            return base(x)
        if drop:  # the update sees a dropped input, the base the whole one: S cannot be folded into W
            y, u = base(x), self.dropout(x)
            if empty or self.use_dense(x):
                return y + F.linear(u, self.delta_weight().to(u.dtype))
            delta = self._rows({name: update(u) for name, update in self.updates.items()}, u)
            return torch.add(y, delta.to(y.dtype), alpha=self.alpha)
        if (empty and self.weight_blocker() is None) or self.use_dense(x):
            return self._linear(x, base.weight + self._stored_delta())
        y = base(x)
        delta = self._rows({name: update(x) for name, update in self.updates.items()}, x)
        return torch.add(y, delta.to(y.dtype), alpha=self.alpha)  # no extra output-sized temporary

    def _effective_weight(self) -> torch.Tensor:
        """``W + sum alpha_i S_i`` over the active adapters not merged into ``W`` (differentiable)."""
        weight = self.base_layer.weight
        for name in self.active:
            if name not in self._merged_names:
                weight = weight + self._stored_delta(name)
        return weight

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Look ``ids`` up in the effective table ``W + sum alpha_i S_i`` (merged adapters are in ``W`` already)."""
        base, weight = self.base_layer, self._effective_weight()
        return F.embedding(ids, weight, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq)

    def _forward_stacked(self, x: torch.Tensor, empty: bool) -> torch.Tensor:
        """Any other active set (none, several, or not the own adapter): ``W' x + sum_i alpha_i S_i x_i`` over the
        active adapters not merged into ``W'`` (``x_i``: the input after adapter i's dropout, in training)."""
        y = self.base_layer(x)
        for name in self.active:
            if name in self._merged_names:
                continue
            slot = self.slot(name)
            u = slot.dropout(x) if slot.dropout is not None and self.training else x
            if empty or self.use_dense(u, slot):
                y = y + F.linear(u, self.delta_weight(name).to(u.dtype))
            else:
                delta = self._rows({s: update(u) for s, update in slot.updates.items()}, u, slot.slices)
                y = torch.add(y, delta.to(y.dtype), alpha=slot.alpha)
        return y

    # -- merging -------------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, names: Sequence[str] | None = None) -> None:
        """Fold ``alpha_i * S_i`` of the named active adapters (``None``: every active one) into the base weight;
        safe against forwards running in other threads."""
        if self.mode != "lora":
            raise ValueError(
                "adapter mode adds a non-linear branch h + act(S h) + b; it cannot be merged into the weights"
            )
        blocker = self.weight_blocker()
        if blocker is not None:
            raise ValueError(f"cannot merge: {blocker}; keep the layer unmerged or dequantise the base first")
        if self.disabled:
            raise ValueError("cannot merge inside disable_adapter(): the update is switched off there")
        names = self.active if names is None else tuple(names)
        inactive = [n for n in names if n not in self.active]
        if inactive:
            raise ValueError(f"cannot merge {inactive}: not active on this layer (active: {list(self.active)})")
        with self._merge_lock:
            for name in names:
                if name not in self._merged_names:
                    self.base_layer.weight += self._stored_delta(name)
                    self._merged_names.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        with self._merge_lock:
            while self._merged_names:  # the reverse of the order merged
                self.base_layer.weight -= self._stored_delta(self._merged_names[-1])
                self._merged_names.pop()

    # A lock cannot be pickled or deep-copied: copies get a fresh one.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_merge_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        merged = state.pop("merged", None)  # pickled before named adapters: a plain flag
        super().__setstate__(state)
        if "adapter_name" not in self.__dict__:
            self.adapter_name, self.active = DEFAULT_ADAPTER, (DEFAULT_ADAPTER,)
            self._merged_names = [DEFAULT_ADAPTER] if merged else []
            self._modules.setdefault("extra", nn.ModuleDict())
        self.__dict__.setdefault("embedding", False)
        self.__dict__.setdefault("read_by_parent", False)
        self.__dict__.setdefault("conv", False)
        self._merge_lock = threading.RLock()
        self.__dict__.setdefault("_warned_merged", False)
        self.__dict__.setdefault("disabled", False)
        if "_out_features" not in self.__dict__:  # pickled by an older surmlab: an nn.Linear base, no dropout
            self.transposed, self.dropout = False, None
            self._out_features, self._in_features = features(self.base_layer)

    def has_plain_form(self) -> bool:
        """Whether the layer equals one ``nn.Linear`` (LoRA mode on a floating-point weight)."""
        return self.mode == "lora" and self.weight_blocker() is None

    def weight_blocker(self) -> str | None:
        """Why ``alpha S`` cannot be added to the base weight in place (quantised or packed), or ``None``."""
        weight = self.base_layer.weight
        kind = type(weight).__name__
        if not weight.is_floating_point() or kind in PACKED_WEIGHTS:
            return f"its base weight is {kind} ({str(weight.dtype).removeprefix('torch.')}): quantised or packed"
        return None

    def extra_repr(self) -> str:
        slices = ",".join(name for name, _, _ in self.slices)
        dropout = f", dropout={self.dropout.p}" if self.dropout is not None else ""
        disabled = ", disabled" if self.disabled else ""
        named = "" if self.adapter_names == [DEFAULT_ADAPTER] else f", adapters={self.adapter_names}"
        active = "" if self.active == (self.adapter_name,) else f", active={list(self.active)}"
        return (
            f"mode={self.mode}, slices={slices}, alpha={self.alpha}, product={self.product}{dropout}, "
            f"merged={self.merged}{disabled}{named}{active}"
        )


# -- state-dict layout (see the module docstring) ---------------------------------------------------------


def _plain_keys(module: SurmLinear, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """``weight`` = the effective weight, ``bias`` = the base bias; ``base_layer.weight`` only when unmerged."""
    if not module.has_plain_form():
        return
    base = module.base_layer
    with torch.no_grad(), module._merge_lock:
        # The same sums merge() stores (in the same order), so a plain reload equals the merged model bit for bit.
        effective = state.pop(f"{prefix}base_layer.weight") if module.merged else base.weight.detach()
        pending = [name for name in module.active if name not in module.merged_names]
        for name in pending:
            effective = effective + module._stored_delta(name)
        # Nothing added to an unmerged weight: a copy, as a state dict holds no two keys on one storage.
        state[f"{prefix}weight"] = effective if pending or module.merged else effective.clone()
        if f"{prefix}base_layer.bias" in state:
            state[f"{prefix}bias"] = state.pop(f"{prefix}base_layer.bias")


def _from_plain_keys(module: SurmLinear, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Map the plain keys back onto ``base_layer``; a state dict saved while merged loads merged."""
    if module.mode != "lora":
        return
    if f"{prefix}bias" in state:
        state[f"{prefix}base_layer.bias"] = state.pop(f"{prefix}bias")
    if f"{prefix}base_layer.weight" in state:  # saved unmerged (or by an older surmlab): weight is derived
        state.pop(f"{prefix}weight", None)
        module.merged = False
    elif f"{prefix}weight" in state:
        state[f"{prefix}base_layer.weight"] = state.pop(f"{prefix}weight")
        # With updates next to it, ``weight`` already holds them (saved merged); alone, it is a plain base model's.
        module.merged = any(k.startswith((f"{prefix}updates.", f"{prefix}extra.")) for k in state)


# -- nn.MultiheadAttention's fused in-projection -------------------------------------------------------------------
#
# An ``nn.MultiheadAttention`` keeps its q, k, v projection as bare Parameters (``in_proj_weight``, 3E x E, and
# ``in_proj_bias``) that its forward and fast path read by name. To adapt it, ``attach_in_proj`` moves those very
# Parameters into a child ``in_proj`` (an ``nn.Linear`` E -> 3E, wrapped in a ``SurmLinear`` with
# ``read_by_parent``) and swaps the attention's class for a subclass whose ``in_proj_weight`` / ``in_proj_bias``
# are read through that child. Its state dict keeps the plain attention's keys (``in_proj_weight`` holding the
# effective weight); ``release_in_proj`` gives back a plain attention owning its Parameters.

IN_PROJ = "in_proj"
_IN_PROJ_KEYS = (("in_proj_weight", f"{IN_PROJ}.weight"), ("in_proj_bias", f"{IN_PROJ}.bias"))


class InProjReader:
    """Mixed in front of an ``nn.MultiheadAttention`` class: the fused projection is served by the child ``in_proj``."""

    @property
    def in_proj_weight(self) -> torch.Tensor:
        served = self.__dict__.get("_in_proj_served")
        return served[0] if served is not None else self.in_proj.weight

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        served = self.__dict__.get("_in_proj_served")
        return served[1] if served is not None else self.in_proj.bias

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The attention's forward, which reads ``in_proj_weight`` up to three times: ``W + sum alpha_i S_i`` is
        computed once, and merge() in another thread waits meanwhile (as in ``SurmLinear.forward``)."""
        in_proj = self.in_proj
        with in_proj._merge_lock:
            self.__dict__["_in_proj_served"] = (in_proj.weight, in_proj.bias)
            try:
                return super().forward(*args, **kwargs)
            finally:
                self.__dict__["_in_proj_served"] = None

    def _load_from_state_dict(self, state: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """The plain attention's keys go to the child ``in_proj`` (whose own hook sorts base and effective weight)."""
        for plain, moved in _IN_PROJ_KEYS:
            if f"{prefix}{plain}" in state:
                state[f"{prefix}{moved}"] = state.pop(f"{prefix}{plain}")
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


class SurmMultiheadAttention(InProjReader, nn.MultiheadAttention):
    """An ``nn.MultiheadAttention`` whose ``in_proj_weight`` / ``in_proj_bias`` are its child ``in_proj``'s."""


_READER_CLASSES: dict[type, type] = {nn.MultiheadAttention: SurmMultiheadAttention}


def _reader_class(cls: type) -> type:
    """The ``InProjReader`` subclass of ``cls`` (a subclass of ``nn.MultiheadAttention`` gets one made once)."""
    if cls not in _READER_CLASSES:
        _READER_CLASSES[cls] = type(f"Surm{cls.__name__}", (InProjReader, cls), {})
    return _READER_CLASSES[cls]


def in_proj_view(attention: nn.MultiheadAttention, name: str) -> nn.Linear:
    """An ``nn.Linear`` (E -> 3E) holding ``attention``'s in-projection Parameters (no copy), for target ``name``."""
    if not attention._qkv_same_embed_dim:
        raise ValueError(
            f"target {name}: this MultiheadAttention has kdim={attention.kdim}, vdim={attention.vdim} and "
            f"embed_dim={attention.embed_dim}, so it keeps separate q_proj_weight, k_proj_weight and v_proj_weight "
            "and no fused in_proj_weight; only attentions with kdim == vdim == embed_dim can be adapted at in_proj "
            "(exclude it, or target its out_proj)"
        )
    embed_dim, bias = attention.embed_dim, attention.in_proj_bias
    linear = nn.Linear(embed_dim, 3 * embed_dim, bias=bias is not None, device="meta")
    linear.weight = attention.in_proj_weight
    linear.bias = bias
    return linear


def attach_in_proj(attention: nn.MultiheadAttention, wrapper: SurmLinear) -> None:
    """Make ``wrapper`` (over ``in_proj_view(attention)``) the child ``in_proj`` that ``attention`` reads from."""
    # None entries keep the Parameter order for release_in_proj; state dicts and parameters() skip them.
    attention._parameters["in_proj_weight"] = None
    attention._parameters["in_proj_bias"] = None
    attention.__class__ = _reader_class(type(attention))
    attention.__dict__["_in_proj_served"] = None
    attention.in_proj = wrapper
    attention.register_state_dict_post_hook(_in_proj_plain_keys)


def release_in_proj(attention: nn.Module) -> None:
    """Undo ``attach_in_proj``: the plain class again, owning the (possibly merged into) base Parameters."""
    child = attention._modules.pop(IN_PROJ)
    base = child.base_layer if isinstance(child, SurmLinear) else child
    attention.__class__ = type(attention).__bases__[1]
    attention.__dict__.pop("_in_proj_served", None)
    attention._parameters["in_proj_weight"] = base.weight
    attention._parameters["in_proj_bias"] = base.bias
    for key, hook in list(attention._state_dict_hooks.items()):
        if hook is _in_proj_plain_keys:
            del attention._state_dict_hooks[key]


def _in_proj_plain_keys(_module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """The plain attention's keys, first as there: ``in_proj_weight`` (the effective weight ``in_proj`` wrote) and
    ``in_proj_bias``; the attention's entries are the last ones written, so they are re-inserted in that order."""
    own = {key: state.pop(key) for key in [k for k in state if k.startswith(prefix)]}
    for plain, moved in _IN_PROJ_KEYS:
        if f"{prefix}{moved}" in own:
            state[f"{prefix}{plain}"] = own.pop(f"{prefix}{moved}")
    state.update(own)

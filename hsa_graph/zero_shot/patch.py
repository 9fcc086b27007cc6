r"""`patch_model`: swap softmax attention for HSA inside a pre-trained Hugging
Face encoder, with no training, and restore it exactly afterwards.

How it hooks in (robust across transformers versions, 4.x and 5.x):

* a forward pre-hook on the model you pass reads ``input_ids`` and
  ``attention_mask`` (by name, through the forward's signature), builds the
  token forest once per call and caches its layout for every patched layer;
* each chosen self-attention module gets an instance-level ``forward`` that
  reuses the module's own ``query``/``key``/``value`` projections and runs
  :func:`~hsa_graph.hsa_attention` per head with ``include_self=True``; the
  layer's output projection, residual and LayerNorm are untouched;
* unpatching deletes the instance ``forward`` (or puts back the one that was
  there) and removes the hooks: no weight is ever copied or modified, so the
  restored model is bitwise the original.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..functional import hsa_attention
from ..hierarchy import Hierarchy
from ..layout import TreeLayout, attention_dtype
from .builders import check_token_hierarchy, resolve_builder

__all__ = ['patch_model', 'HSAPatch', 'find_self_attention_layers']

_MISSING = object()


def _is_self_attention(module: nn.Module) -> bool:
    # BERT, RoBERTa, ELECTRA, XLM-R, MiniLM ... all share this shape.
    linear = all(isinstance(getattr(module, name, None), nn.Linear)
                 for name in ('query', 'key', 'value'))
    return (linear and hasattr(module, 'num_attention_heads') and
            hasattr(module, 'attention_head_size') and
            'cross' not in type(module).__name__.lower())


def find_self_attention_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    r"""The BERT-style self-attention modules of :obj:`model`, in layer order,
    as ``(qualified name, module)`` pairs. Layer ``i`` of
    :func:`patch_model` is entry ``i`` of this list.

    Args:
        model (torch.nn.Module): a Hugging Face encoder (``BertModel``,
            ``RobertaForSequenceClassification``, ...).
    """
    return [(name, module) for name, module in model.named_modules()
            if _is_self_attention(module)]


def _check_supported(name: str, module: nn.Module) -> None:
    config = getattr(module, 'config', None)
    position_type = getattr(module, 'position_embedding_type',
                            getattr(config, 'position_embedding_type',
                                    'absolute'))
    if position_type not in (None, 'absolute'):
        raise ValueError(f"{name}: position_embedding_type='{position_type}' "
                         f'adds relative-position terms inside the attention '
                         f'scores, which HSA cannot reproduce; only '
                         f"'absolute' models can be patched")
    if getattr(module, 'is_decoder', False) or getattr(module, 'is_causal',
                                                       False):
        raise ValueError(f'{name} is causal (a decoder layer); HSA replaces '
                         f'bidirectional encoder attention only')


def _padding_from_layer_mask(attention_mask: Optional[Tensor], batch: int,
                             seq_len: int, device) -> Tensor:
    # Fallback when the model-level hook saw no mask (a layer called
    # directly): read the keys a query may attend to off the layer's mask,
    # which is [B, 1, 1 or L, L] additive (float) or boolean (True = keep).
    if attention_mask is None:
        return torch.ones(batch, seq_len, dtype=torch.long, device=device)
    if attention_mask.dim() == 2:
        return attention_mask
    if attention_mask.dim() != 4:
        raise ValueError(f'Cannot read padding from an attention mask of '
                         f'shape {list(attention_mask.shape)}')
    keys = attention_mask[:, 0, -1, :]
    # Additive masks use -1e4 (old transformers) down to finfo.min.
    keep = keys if keys.dtype == torch.bool else keys > -1e3
    return keep.expand(batch, seq_len).long()


class _BatchContext:
    r"""The token forest of one forward call, shared by all patched layers."""

    def __init__(self, hierarchy: Hierarchy, batch: int, seq_len: int):
        self.hierarchy = hierarchy
        self.batch = batch
        self.seq_len = seq_len
        self.layout: TreeLayout = hierarchy.layout
        is_leaf = self.layout.is_leaf
        self.leaf_nodes = is_leaf.nonzero().flatten()
        self.leaf_tokens = (hierarchy.batch[self.leaf_nodes] * seq_len +
                            hierarchy.source_id[self.leaf_nodes])


class HSAPatch:
    r"""Handle returned by :func:`patch_model`: a context manager, and
    :meth:`unpatch` to restore the model.

    Attributes:
        layers (list of int): the patched layer numbers.
        module_names (list of str): their qualified module names.
        last_hierarchy (Hierarchy or None): the token forest of the most
            recent forward call (for FLOP accounting and plots).
    """

    def __init__(self, model: nn.Module, modules: List[Tuple[int, str,
                                                             nn.Module]],
                 builder: Callable, validate: bool):
        self.model = model
        self.layers = [layer for layer, _, _ in modules]
        self.module_names = [name for _, name, _ in modules]
        self.last_hierarchy: Optional[Hierarchy] = None
        self._builder = builder
        self._validate = validate
        self._modules = [module for _, _, module in modules]
        self._saved_forwards: List[Any] = []
        self._context: Optional[_BatchContext] = None
        self._hooks: List[Any] = []
        self._active = False
        self._signature = inspect.signature(model.forward)

    # -- lifecycle -----------------------------------------------------------
    def _install(self) -> None:
        for module in self._modules:
            if getattr(module, '_hsa_patch', None) is not None:
                raise ValueError('This layer is already patched by HSA; '
                                 'unpatch the earlier handle first')
        for module in self._modules:
            self._saved_forwards.append(module.__dict__.get('forward',
                                                            _MISSING))
            original = module.forward
            module.forward = self._make_forward(module, original)
            module._hsa_patch = self
        self._hooks.append(self.model.register_forward_pre_hook(
            self._capture_inputs, with_kwargs=True))
        self._hooks.append(self.model.register_forward_hook(
            self._release_inputs, always_call=True))
        self._active = True

    def unpatch(self) -> None:
        r"""Restores every patched layer and removes the hooks (idempotent).
        The model's parameters were never touched, so its outputs are bitwise
        the original ones afterwards."""
        if not self._active:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for module, saved in zip(self._modules, self._saved_forwards):
            if saved is _MISSING:
                del module.forward
            else:
                module.forward = saved
            del module._hsa_patch
        self._saved_forwards.clear()
        self._context = None
        self._active = False

    @property
    def active(self) -> bool:
        r"""Whether the patch is currently installed."""
        return self._active

    def __enter__(self) -> 'HSAPatch':
        return self

    def __exit__(self, *exc_info) -> None:
        self.unpatch()

    def __repr__(self) -> str:
        state = 'active' if self._active else 'removed'
        return (f'{self.__class__.__name__}(layers={self.layers}, '
                f'{state})')

    # -- per call --------------------------------------------------------------
    def _capture_inputs(self, module, args, kwargs) -> None:
        try:
            bound = self._signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            bound = kwargs
        input_ids = bound.get('input_ids')
        mask = bound.get('attention_mask')
        shape_source = input_ids if input_ids is not None else bound.get(
            'inputs_embeds')
        if shape_source is None:
            self._context = None
            return
        batch, seq_len = shape_source.shape[:2]
        if mask is None:
            mask = torch.ones(batch, seq_len, dtype=torch.long,
                              device=shape_source.device)
        self._context = self._build_context(input_ids, mask)

    def _release_inputs(self, module, args, output) -> None:
        self._context = None

    def _build_context(self, input_ids: Optional[Tensor],
                       mask: Tensor) -> _BatchContext:
        if mask.dim() != 2:
            raise ValueError(f'patch_model needs the 2-D [batch, seq_len] '
                             f'attention_mask, got shape {list(mask.shape)}')
        hierarchy = self._builder(input_ids, mask)
        if self._validate:
            check_token_hierarchy(hierarchy, mask)
        self.last_hierarchy = hierarchy
        return _BatchContext(hierarchy, mask.size(0), mask.size(1))

    def _make_forward(self, module: nn.Module, original: Callable
                      ) -> Callable:
        signature = inspect.signature(original)
        legacy = 'output_attentions' in signature.parameters  # < 4.48

        def forward(hidden_states: Tensor, *args, **kwargs):
            # Bind to the original signature: 4.x passes the mask, head mask
            # and encoder states positionally, 5.x by keyword.
            try:
                bound = signature.bind(hidden_states, *args, **kwargs)
                named = dict(bound.arguments)
                named.update(named.pop('kwargs', {}) or {})
            except TypeError:
                named = dict(kwargs)
                named.setdefault('attention_mask', args[0] if args else None)
            if named.get('encoder_hidden_states') is not None:
                raise ValueError('HSA-patched layers are self-attention only '
                                 '(got encoder_hidden_states)')
            if named.get('head_mask') is not None:
                raise ValueError('head_mask is not supported by HSA-patched '
                                 'layers')
            output = self._attend(module, hidden_states,
                                  named.get('attention_mask'))
            if legacy:
                return (output, None) if named.get('output_attentions') \
                    else (output, )
            return output, None

        return forward

    def _attend(self, module: nn.Module, hidden_states: Tensor,
                attention_mask: Optional[Tensor]) -> Tensor:
        batch, seq_len = hidden_states.shape[:2]
        context = self._context
        if context is None or context.batch != batch or \
                context.seq_len != seq_len:
            # Called outside the patched model's own forward (e.g. a layer
            # run directly): derive the padding from the layer's mask.
            mask = _padding_from_layer_mask(attention_mask, batch, seq_len,
                                            hidden_states.device)
            context = self._build_context(None, mask)
        heads = module.num_attention_heads
        head_dim = module.attention_head_size
        flat_states = hidden_states.reshape(batch * seq_len, -1)
        tokens = flat_states[context.leaf_tokens.to(hidden_states.device)]
        query = module.query(tokens).view(-1, heads, head_dim)
        key = module.key(tokens).view(-1, heads, head_dim)
        value = module.value(tokens).view(-1, heads, head_dim)
        # hsa_attention scales by 1/sqrt(d); honour a model's own scaling.
        scaling = getattr(module, 'scaling', None)
        if scaling is not None and not math.isclose(scaling,
                                                    head_dim**-0.5):
            query = query * (scaling * math.sqrt(head_dim))
        num_nodes = context.layout.num_nodes
        leaf_nodes = context.leaf_nodes.to(hidden_states.device)
        shape = (num_nodes, heads, head_dim)
        # Internal nodes carry no content: zero rows (never read).
        query_nodes = query.new_zeros(shape).index_copy_(0, leaf_nodes, query)
        key_nodes = key.new_zeros(shape).index_copy_(0, leaf_nodes, key)
        value_nodes = value.new_zeros(shape).index_copy_(0, leaf_nodes, value)
        layout = context.layout
        dtype = attention_dtype(hidden_states.dtype)
        if layout.device != hidden_states.device or layout.dtype != dtype:
            layout = layout.to(hidden_states.device, dtype)
        out_nodes = hsa_attention(query_nodes, key_nodes, value_nodes,
                                  include_self=True, layout=layout)
        # Padding rows get zeros (finite; the model never reads them).
        out = out_nodes.new_zeros(batch * seq_len, heads * head_dim)
        out.index_copy_(0, context.leaf_tokens.to(hidden_states.device),
                        out_nodes[leaf_nodes].reshape(-1, heads * head_dim))
        return out.view(batch, seq_len, heads * head_dim)


def patch_model(model: nn.Module, layers: Optional[Union[int,
                                                         Sequence[int]]] = None,
                hierarchy: Union[str, Callable] = 'windows',
                branching: Sequence[int] = (2, 4, 8, 16),
                tokenizer: Any = None, global_tokens: Optional[str] = None,
                validate: bool = True) -> HSAPatch:
    r"""Replaces softmax attention by Hierarchical Self-Attention in chosen
    layers of a pre-trained Hugging Face encoder, zero-shot (no training),
    from the `"Hierarchical Self-Attention: Generalizing Neural Attention
    Mechanics to Multi-Scale Problems" <https://arxiv.org/abs/2509.15448>`_
    paper (NeurIPS 2025).

    Each patched layer keeps its own Q/K/V and output weights and runs
    :func:`~hsa_graph.hsa_attention` per head with ``include_self=True`` on a
    forest whose leaves are the non-padding tokens (one tree per sequence):

    .. math::
        \mathrm{softmax}\Big(\frac{q_i^\top k_j}{\sqrt d}\Big)
        \;\longrightarrow\; \theta_{ij}^{\mathrm{HSA}},

    the block-constant attention closest (in reverse KL) to the original on
    that tree. On the ``'flat'`` tree it *is* the original attention (up to
    float rounding).

    Use it as a context manager, or keep the handle and call
    :meth:`HSAPatch.unpatch`::

        >>> with patch_model(model, layers=[3, 5], hierarchy='windows'):
        ...     out = model(**batch)
        >>> handle = patch_model(model)          # every layer
        >>> handle.unpatch()

    Args:
        model (torch.nn.Module): a BERT-family encoder (``BertModel``,
            ``RobertaModel``, their ``For...`` heads); call it with keyword
            or positional ``input_ids`` / ``attention_mask`` as usual.
        layers (int or list of int, optional): layer numbers to patch (0 is
            the first; negative numbers count from the end). (default:
            :obj:`None`: every layer)
        hierarchy (str or callable): ``'windows'`` (fixed non-overlapping
            windows with :obj:`branching`), ``'flat'`` (one family: exact),
            ``'sentences'`` (sentence- and word-aware trees, needs
            :obj:`tokenizer`), or a callable ``(input_ids, attention_mask) ->
            Hierarchy`` following the contract of
            :mod:`hsa_graph.zero_shot.builders`. (default: :obj:`'windows'`)
        branching (sequence of int): window sizes, bottom-up, for
            ``'windows'``. (default: :obj:`(2, 4, 8, 16)`, the paper's)
        tokenizer: the model's tokenizer, for ``'sentences'`` and
            ``global_tokens='special'``.
        global_tokens (str, optional): for ``'windows'``, tokens hung directly
            under the root instead of inside a window: ``'ends'`` (first and
            last token of each sequence, i.e. ``[CLS]`` and ``[SEP]``) or
            ``'special'`` (the tokenizer's special tokens). BERT heads park
            much of their attention on these sinks; keeping them out of the
            windows preserves that. (default: :obj:`None`)
        validate (bool): check every built forest against the builder
            contract (cheap; turn off for timing). (default: :obj:`True`)

    Returns:
        :class:`HSAPatch`

    Notes:
        Attention dropout does not exist in HSA (evaluate in ``eval()``
        mode); ``output_attentions`` returns ``None`` for patched layers;
        ``head_mask``, cross-attention, causal decoders and relative position
        embeddings raise :class:`ValueError`.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f'model must be a torch.nn.Module, got '
                         f'{type(model).__name__}')
    found = find_self_attention_layers(model)
    if not found:
        raise ValueError(f'{type(model).__name__} has no BERT-style '
                         f'self-attention module (with query/key/value '
                         f'Linear layers and num_attention_heads); '
                         f'patch_model supports BERT-family encoders')
    if layers is None:
        chosen = list(range(len(found)))
    else:
        requested = [layers] if isinstance(layers, int) else list(layers)
        chosen = []
        for layer in requested:
            if not isinstance(layer, int) or isinstance(layer, bool) or \
                    not -len(found) <= layer < len(found):
                raise ValueError(f'layers must be integers in '
                                 f'[-{len(found)}, {len(found) - 1}] (the '
                                 f'model has {len(found)} attention layers); '
                                 f'got {layer!r}')
            layer = layer % len(found)
            if layer in chosen:
                raise ValueError(f'layer {layer} is listed twice in {layers}')
            chosen.append(layer)
        chosen.sort()
    modules = [(layer, *found[layer]) for layer in chosen]
    for _, name, module in modules:
        _check_supported(name, module)
    builder = resolve_builder(hierarchy, branching, tokenizer, global_tokens)
    handle = HSAPatch(model, modules, builder, validate)
    handle._install()
    return handle

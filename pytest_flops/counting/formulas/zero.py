"""Ops known to cost no FLOPs: views, reshapes, copies, indexing, creation,
metadata queries, random number generation and communication.

They move or describe data; none does arithmetic on it. An op that is
neither here nor in a formula module is reported as ``uncounted``.
"""

from __future__ import annotations

import torch

from ..registry import DEFAULT_REGISTRY

aten = torch.ops.aten

#: Names of aten ops that do no arithmetic (resolved when present in this torch build).
ZERO_COST_ATEN = (
    # views and reshapes
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "as_strided_", "expand", "expand_as",
    "permute", "transpose", "transpose_", "t", "t_", "numpy_T", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_",
    "flatten", "unflatten", "view_as", "alias", "detach", "detach_", "lift_fresh", "lift_fresh_copy",
    "slice", "select", "narrow", "split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes",
    "chunk", "unbind", "diagonal", "movedim", "unfold", "view_as_real", "view_as_complex", "_conj", "conj",
    "resolve_conj", "resolve_neg", "_neg_view", "real", "imag", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "im2col", "col2im", "_mkldnn_reshape", "_mkldnn_transpose",
    "_mkldnn_transpose_",
    # copies, layout and type changes
    "clone", "copy_", "_copy_from", "_copy_from_and_resize", "_to_copy", "to", "contiguous", "_pin_memory",
    "_unsafe_index", "_unsafe_index_put", "cat", "stack", "hstack", "vstack", "concat", "concatenate",
    "repeat", "repeat_interleave", "tile", "roll", "flip", "rot90", "pad", "constant_pad_nd", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "_to_dense", "to_dense", "to_sparse", "_nested_tensor_from_tensor_list", "_has_compatible_shallow_copy_type",
    "set_", "resize_", "resize_as_", "_resize_output_", "record_stream", "_local_scalar_dense", "item",
    # indexing, gathering, scattering, sorting and masks
    "index", "index_select", "index_put", "index_put_", "index_copy", "index_copy_", "index_fill", "index_fill_",
    "gather", "scatter", "scatter_", "masked_fill", "masked_fill_", "masked_select", "masked_scatter",
    "masked_scatter_", "take", "take_along_dim", "nonzero", "nonzero_static", "where", "embedding",
    "embedding_dense_backward", "_embedding_bag", "embedding_renorm_", "sort", "argsort", "topk", "kthvalue",
    "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim", "tril", "triu", "tril_", "triu_",
    "tril_indices", "triu_indices", "diag_embed", "diag", "one_hot", "bucketize", "searchsorted",
    "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "max_unpool2d", "max_unpool3d",
    "select_backward", "slice_backward", "index_select_backward", "diagonal_backward", "unfold_backward",
    "as_strided_scatter", "slice_scatter", "select_scatter", "diagonal_scatter", "new_empty_strided",
    # creation and random numbers
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "zeros", "zeros_like", "new_zeros",
    "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "fill", "fill_", "zero_", "scalar_tensor",
    "arange", "linspace", "logspace", "eye", "rand", "rand_like", "randn", "randn_like", "randint",
    "randint_like", "randperm", "bernoulli", "bernoulli_", "uniform_", "normal", "normal_", "exponential_",
    "geometric_", "cauchy_", "log_normal_", "random_", "multinomial", 
    "lift", "_efficientzerotensor", "tensor", "complex", "polar", "_assert_async",
    "_assert_tensor_metadata", "_functional_assert_async", "sym_constrain_range", "sym_constrain_range_for_size",
    "_assert_scalar", "_print", "_linalg_check_errors",
    # comparisons and logic (no arithmetic on values)
    "eq", "ne", "lt", "le", "gt", "ge", "equal", "isnan", "isinf", "isfinite", "isposinf", "isneginf",
    "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor",
    "bitwise_not", "bitwise_left_shift", "bitwise_right_shift", "__and__", "__or__", "__xor__", "__lshift__",
    "__rshift__", "allclose", "isclose", "is_nonzero", "is_same_size", "sign", "signbit", "any", "all",
    # metadata queries
    "size", "sym_size", "stride", "sym_stride", "storage_offset", "sym_storage_offset", "numel", "sym_numel",
    "dim", "is_contiguous", "sym_is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense",
    "_nested_tensor_size", "_nested_tensor_strides", "_nested_tensor_storage_offsets", "is_pinned",
    "_version", "_is_any_true", "_is_all_true",
    # sign-like and identity ops, max-pool gradients (scatters), nearest resampling (copies)
    "sgn", "sgn_", "sign_", "heaviside", "heaviside_", "positive", "adaptive_max_pool2d_backward",
    "adaptive_max_pool3d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
    "max_pool2d_backward", "mkldnn_max_pool2d_backward", "mkldnn_max_pool3d_backward", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d", "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d", "_foreach_zero_", "_foreach_copy_", "_foreach_copy", "_foreach_sign",
    "_foreach_sign_",
    # membership, selection and sorting (comparisons only, as sort and topk): generate() and MoE routing
    "isin", "msort", "median", "nanmedian", "mode", "argwhere", "_unique2", "unique_dim_consecutive",
    # window creation, random draws, index and weight-layout conversion
    "hamming_window", "hann_window", "bartlett_window", "blackman_window", "kaiser_window", "_standard_gamma",
    "_sample_dirichlet", "poisson", "binomial", "_nested_get_jagged_dummy", "_convert_indices_from_coo_to_csr",
    "_convert_indices_from_csr_to_coo", "_convert_weight_to_int4pack", "_convert_weight_to_int4pack_for_cpu",
    "mkldnn_reorder_conv2d_weight", "mkldnn_reorder_conv3d_weight", "_cudnn_rnn_flatten_weight",
)

#: More zero-cost ops: random draws, copies, in-place resizes and scatters, autograd and assert markers.
MORE_ZERO_COST_ATEN = (
    "random", "uniform", "exponential", "geometric", "log_normal", "cauchy", "normal_functional",
    "_philox_key_fold_in", "_philox_key_split", "_philox_normal", "_philox_normal_", "_philox_uniform",
    "_philox_uniform_", "copy", "set", "resize", "resize_as", "_resize_output", "_lazy_clone", "_stack", "_chunk_cat",
    "block_diag", "_index_put_impl", "_index_put_impl_", "put", "put_", "_unsafe_masked_index",
    "_unsafe_masked_index_put_accumulate", "zero", "range", "_foreach_clone", "_foreach_zero", "_fw_primal",
    "_make_dual", "_functional_assert_scalar", "_functional_sym_constrain_range",
    "_functional_sym_constrain_range_for_size", "_make_dep_token", "_has_same_storage_numel", "is_set_to",
    "slice_inverse", "from_file", "fft_fftfreq", "fft_rfftfreq", "_cudnn_init_dropout_state",
    "_fill_mem_eff_dropout_mask_", "_fused_sdp_choice", "_use_cudnn_ctc_loss", "_use_miopen_ctc_loss",
    "_new_zeros_with_same_feature_meta", "_pack_padded_sequence", "masked_scatter_backward", "narrow_copy",
    "_reshape_copy", "__ilshift__", "__irshift__",
)
#: The ``_copy`` variants of the views above (functionalized graphs) and the in-place comparisons and logic ops.
DERIVED_ZERO_COST_ATEN = tuple(f"{name}_copy" for name in ZERO_COST_ATEN) + tuple(
    f"{name}_" for name in ("eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
                            "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
                            "bitwise_left_shift", "bitwise_right_shift"))

DEFAULT_REGISTRY.register_zero_cost(*(getattr(aten, name) for name in ZERO_COST_ATEN + MORE_ZERO_COST_ATEN
                                      + DERIVED_ZERO_COST_ATEN if hasattr(aten, name)))
DEFAULT_REGISTRY.register_zero_cost(torch.ops.prim.layout, torch.ops.prim.device)

# Collectives: they move bytes between ranks and do no FLOPs worth counting here
# (a reduction's adds are O(bytes)); they never go to ``uncounted``.
COLLECTIVES = {
    "c10d": (
        "allreduce_", "allreduce_coalesced_", "allgather_", "_allgather_base_", "allgather_coalesced_",
        "allgather_into_tensor_coalesced_", "reduce_scatter_", "_reduce_scatter_base_",
        "reduce_scatter_tensor_coalesced_", "reduce_", "broadcast_", "gather_", "scatter_", "alltoall_",
        "alltoall_base_", "barrier", "monitored_barrier_", "send", "recv_", "recv_any_source_",
    ),
    "_c10d_functional": (
        "all_reduce", "all_reduce_", "all_reduce_coalesced", "all_reduce_coalesced_", "all_gather_into_tensor",
        "all_gather_into_tensor_out", "all_gather_into_tensor_coalesced", "reduce_scatter_tensor",
        "reduce_scatter_tensor_coalesced", "all_to_all_single", "broadcast", "broadcast_", "wait_tensor",
        "_wrap_tensor_autograd", "isend", "irecv", "batch_p2p_ops",
    ),
    "_c10d_functional_autograd": ("all_gather_into_tensor", "all_to_all_single", "reduce_scatter_tensor"),
}

if torch.distributed.is_available():
    import torch.distributed  # noqa: F401  (registers the c10d ops)

    try:  # defines _c10d_functional._wrap_tensor_autograd, which functional collectives run
        import torch.distributed._functional_collectives  # noqa: F401
    except Exception:  # pragma: no cover
        pass

for _namespace, _names in COLLECTIVES.items():
    for _name in _names:
        try:
            DEFAULT_REGISTRY.register_zero_cost(getattr(getattr(torch.ops, _namespace), _name))
        except (AttributeError, RuntimeError):
            continue

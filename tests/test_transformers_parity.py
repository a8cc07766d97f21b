"""Parity on Hugging Face ``transformers`` models built from small configs (no weights are downloaded).

Skipped when transformers is not installed. compute=True, compute=False (on meta copies, tied weights kept
tied) and ``torch.utils.flop_counter.FlopCounterMode`` on a model built on ``meta`` agree; MoE experts run as
``aten._grouped_mm`` (transformers 5), which FlopCounterMode does not count: there the difference is exactly
the experts' 2·M·K·N.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pytest_flops import count

transformers = pytest.importorskip("transformers", reason="transformers is not installed (the test extra has it)")
if not transformers.utils.is_torch_available():  # a transformers release too new for this torch (py-torch24 env)
    pytest.skip(f"transformers {transformers.__version__} does not support torch {torch.__version__}",
                allow_module_level=True)


def _on_meta(cls: type, config: object, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    with torch.device("meta"):
        return cls(config).to(dtype).eval()


def _torch_count(model: torch.nn.Module, **inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as mode, torch.device("meta"):
        model(**{k: v.to("meta") for k, v in inputs.items()})
    return mode.get_total_flops()


def gpt2() -> tuple[type, object]:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel, config


def test_gpt2_tied_head_counts_on_meta_and_matches_flop_counter_mode(no_fake_fallback: None) -> None:
    cls, config = gpt2()
    torch.manual_seed(0)
    model = cls(config).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    ids = torch.randint(0, 256, (2, 16))
    real = count(model, ids)
    free = count(model, kwargs={"input_ids": ids}, compute=False)
    assert free.extra["compute_path"] == "meta"
    assert real.flops == free.flops == _torch_count(_on_meta(cls, config), input_ids=ids)
    assert real.params == free.params == sum(p.numel() for p in model.parameters())


def test_t5_tied_embeddings_count_on_meta_and_match_flop_counter_mode(no_fake_fallback: None) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).eval()
    ids, decoder_ids = torch.randint(0, 128, (2, 12)), torch.randint(0, 128, (2, 5))
    real = count(model, input_ids=ids, decoder_input_ids=decoder_ids)
    free = count(model, input_ids=ids, decoder_input_ids=decoder_ids, compute=False)
    assert free.extra["compute_path"] == "meta"
    expected = _torch_count(_on_meta(T5ForConditionalGeneration, config), input_ids=ids,
                            decoder_input_ids=decoder_ids)
    assert real.flops == free.flops == expected
    assert real.params == free.params


def test_generate_passes_strict() -> None:
    """generate() calls aten.isin (stopping criteria) and friends: nothing is left uncounted."""
    cls, config = gpt2()
    model = cls(config).eval()
    ids = torch.randint(1, 256, (1, 6))
    m = count(lambda: model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0), strict=True)
    assert not m.uncounted and m.flops > 0


def mixtral() -> tuple[type, object]:
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64)
    return MixtralForCausalLM, config


@pytest.mark.skipif(not hasattr(torch.ops.aten, "_grouped_mm"), reason="torch without aten._grouped_mm")
def test_mixtral_experts_count_as_grouped_matmuls(no_fake_fallback: None) -> None:
    cls, config = mixtral()
    torch.manual_seed(0)
    model = cls(config).eval()
    tokens, k, d, inner, layers = 8, 2, 32, 64, 2
    ids = torch.randint(0, 128, (1, tokens))
    real = count(model, ids)
    uses_grouped = "aten._grouped_mm" in real.by_op
    if not uses_grouped:
        pytest.skip(f"transformers {transformers.__version__} does not run MoE experts as aten._grouped_mm here")
    free = count(model, ids, compute=False)  # fp32 on meta: torch's meta kernel rejects it; counted from shapes
    assert free.extra["compute_path"] == "meta" and not free.uncounted and not real.uncounted
    experts = layers * 2 * tokens * k * (d * 2 * inner + inner * d)  # gate_up (d -> 2·inner), down (inner -> d)
    assert real.by_op["aten._grouped_mm"] == free.by_op["aten._grouped_mm"] == experts
    # FlopCounterMode has no _grouped_mm formula (and its meta run needs bf16): everything else agrees
    assert real.flops == free.flops == _torch_count(_on_meta(cls, config, torch.bfloat16), input_ids=ids) + experts


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("reentrant", [False, True], ids=["saved-tensor-hooks", "reentrant"])
def test_gpt2_with_gradient_checkpointing_trains_replayed_and_counts_the_aten_path(reentrant: bool,
                                                                                    monkeypatch) -> None:
    """Activation (gradient) checkpointing recomputes each block as modules inside the backward: the backward
    is still replayed from its trace after the first steps, and every step equals the aten-level count."""
    from pytest_flops.counting.counter import FlopCounter as Counter

    from test_core import FIELDS

    replayed = []
    charge = Counter._charge_backward
    monkeypatch.setattr(Counter, "_charge_backward", lambda self, trace: (replayed.append(1), charge(self, trace)))
    cls, config = gpt2()
    torch.manual_seed(0)
    model = cls(config).train()
    options = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name (gradient_... is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    ids = torch.randint(0, 256, (1, 16))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()

    for _ in range(4):
        with Counter(model=model, fast_path=False) as slow:
            step()
        with Counter(model=model) as fast:
            step()
        for field in FIELDS:
            assert getattr(fast.measurement, field) == getattr(slow.measurement, field), field
    assert fast.measurement.backward_flops > 2 * fast.measurement.forward_flops  # the recomputation
    assert len(replayed) >= 2


def _t5() -> tuple[type, object]:
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration, T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_heads=4, decoder_start_token_id=0)


def _bert() -> tuple[type, object]:
    from transformers import BertConfig, BertModel

    return BertModel, BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=64)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("ops", ["matmul", "all"])
@pytest.mark.parametrize("build", [gpt2, _t5, _bert, mixtral], ids=["gpt2", "t5", "bert", "mixtral"])
def test_inference_under_no_grad_counts_the_aten_path_field_by_field(build, ops: str) -> None:
    """Under no_grad the function layer calls free functions directly (zero_calls.py) and replays the rest:
    a first count (probing), a second (replaying) and the aten-level path agree on every field."""
    from pytest_flops.counting.counter import FlopCounter as Counter
    from pytest_flops.counting.registry import DEFAULT_REGISTRY

    from test_core import FIELDS

    cls, config = build()
    torch.manual_seed(0)
    model = cls(config).eval()
    ids = torch.randint(0, 128, (2, 12))
    inputs = {"input_ids": ids, "decoder_input_ids": ids[:, :5]} if build is _t5 else {"input_ids": ids}
    registry = DEFAULT_REGISTRY.child()  # fresh traces: the first count probes every call
    found = []
    with torch.no_grad():
        for fast in (True, True, False):
            with Counter(ops, model=model, fast_path=fast, registry=registry) as counter:
                model(**inputs)
            found.append(counter.measurement)
    for field in FIELDS:
        assert getattr(found[0], field) == getattr(found[2], field), field
        assert getattr(found[1], field) == getattr(found[2], field), field
    assert found[2].flops > 0

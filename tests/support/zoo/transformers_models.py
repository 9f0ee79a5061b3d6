"""Tiny models from `transformers`, built from configs (no weights downloaded).

Each case is real model code at toy sizes: decoder-only, encoder-only,
encoder-decoder, vision transformer, convolutional, mixture-of-experts and
sliding-window attention. A wrapper returns the model's main tensor output,
so the comparison with eager is on one tensor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import Dim

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from configs: nothing to fetch

VOCAB = 96
TEXT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)


class MainOutput(torch.nn.Module):
    """A transformers model returning one output field (`logits`, say)."""

    def __init__(self, model: torch.nn.Module, field_name: str):
        super().__init__()
        self.model = model
        self.field_name = field_name

    def main(self, **inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**inputs, return_dict=True), self.field_name)


class TextModel(MainOutput):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.main(input_ids=input_ids)


class Seq2SeqModel(MainOutput):
    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.main(input_ids=input_ids, decoder_input_ids=decoder_input_ids)


class VisionModel(MainOutput):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.main(pixel_values=pixel_values)


_WRAPPERS = {"input_ids": TextModel, "decoder_input_ids": Seq2SeqModel, "pixel_values": VisionModel}


@dataclass
class HFCase:
    name: str
    family: str  # decoder-only, encoder-only, ...
    build: Callable[[], torch.nn.Module]  # the transformers model, eval mode
    inputs: Callable[[int], dict[str, torch.Tensor]]  # size -> keyword inputs
    sizes: tuple[int, int]  # exported at the first, run at both
    dynamic: Callable[[], dict[str, Any]] | None  # dynamic_shapes per input
    pinned: tuple[str, ...]  # the activation family kept in the executor
    output: str = "logits"
    tol: dict[str, float] = field(default_factory=lambda: {"atol": 1e-4, "rtol": 1e-4})

    def make(self) -> MainOutput:
        torch.manual_seed(0)
        wrapper = _WRAPPERS[list(self.inputs(self.sizes[0]))[-1]]
        return wrapper(self.build().eval(), self.output)


def _ids(batch: int, seq: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, seq))


def _text(seq: int) -> dict[str, torch.Tensor]:
    return {"input_ids": _ids(2, seq)}


def _seq2seq(seq: int) -> dict[str, torch.Tensor]:
    return {"input_ids": _ids(2, seq), "decoder_input_ids": _ids(2, seq - 2)}


def _image(batch: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(batch, 3, 32, 32)}


def _seq_dim(*names: str) -> Callable[[], dict[str, Any]]:
    def dims() -> dict[str, Any]:
        seq = Dim("seq", min=4, max=64)
        shapes: dict[str, Any] = {names[0]: {1: seq}}
        for other in names[1:]:  # a decoder length tied to the encoder's (seq - 2)
            shapes[other] = {1: seq - 2}
        return shapes

    return dims


def _batch_dim() -> dict[str, Any]:
    return {"pixel_values": {0: Dim("batch", min=1, max=16)}}


def _model(config_name: str, model_name: str, **config: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import transformers

        cfg = getattr(transformers, config_name)(**config)
        cfg._attn_implementation = "eager"
        return getattr(transformers, model_name)(cfg)

    return build


_DECODER = dict(TEXT, intermediate_size=64, num_key_value_heads=1, max_position_embeddings=128)

HF_ZOO: list[HFCase] = [
    HFCase(
        "gpt2",
        "decoder-only",
        _model(
            "GPT2Config",
            "GPT2LMHeadModel",
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=128,
            bos_token_id=0,
            eos_token_id=0,
            use_cache=False,
        ),
        _text,
        (9, 14),
        _seq_dim("input_ids"),
        ("aten.tanh",),
    ),
    HFCase(
        "llama",
        "decoder-only",
        _model("LlamaConfig", "LlamaForCausalLM", **_DECODER, use_cache=False),
        _text,
        (9, 14),
        _seq_dim("input_ids"),
        ("aten.silu",),
    ),
    HFCase(
        "mistral_sliding_window",
        "decoder-only, sliding-window attention",
        _model(
            "MistralConfig", "MistralForCausalLM", **_DECODER, sliding_window=4, use_cache=False
        ),
        _text,
        (9, 14),
        _seq_dim("input_ids"),
        ("aten.silu",),
    ),
    HFCase(
        "mixtral_moe",
        "decoder-only, mixture of experts",
        _model(
            "MixtralConfig",
            "MixtralForCausalLM",
            **_DECODER,
            num_local_experts=4,
            num_experts_per_tok=2,
            use_cache=False,
        ),
        _text,
        (9, 14),
        _seq_dim("input_ids"),
        ("aten.silu",),
    ),
    HFCase(
        "bert",
        "encoder-only",
        _model(
            "BertConfig",
            "BertForMaskedLM",
            **TEXT,
            intermediate_size=64,
            max_position_embeddings=128,
        ),
        _text,
        (9, 14),
        _seq_dim("input_ids"),
        ("aten.gelu",),
    ),
    HFCase(
        "distilbert",
        "encoder-only",
        _model(
            "DistilBertConfig",
            "DistilBertForMaskedLM",
            vocab_size=VOCAB,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=128,
        ),
        _text,
        (9, 14),
        _seq_dim("input_ids"),
        ("aten.gelu",),
    ),
    HFCase(
        "t5",
        "encoder-decoder",
        _model(
            "T5Config",
            "T5ForConditionalGeneration",
            vocab_size=VOCAB,
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            use_cache=False,
        ),
        _seq2seq,
        (9, 14),
        _seq_dim("input_ids", "decoder_input_ids"),
        ("aten.relu",),
    ),
    HFCase(
        "bart",
        "encoder-decoder",
        _model(
            "BartConfig",
            "BartForConditionalGeneration",
            vocab_size=VOCAB,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            use_cache=False,
        ),
        _seq2seq,
        (9, 14),
        _seq_dim("input_ids", "decoder_input_ids"),
        ("aten.gelu",),
    ),
    HFCase(
        "vit",
        "vision transformer",
        _model(
            "ViTConfig",
            "ViTForImageClassification",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            num_labels=5,
        ),
        _image,
        (2, 5),
        _batch_dim,
        ("aten.gelu",),
    ),
    HFCase(
        "resnet",
        "convolutional",
        _model(
            "ResNetConfig",
            "ResNetForImageClassification",
            embedding_size=16,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            layer_type="basic",
            num_labels=5,
        ),
        _image,
        (2, 5),
        _batch_dim,
        ("aten.relu",),
    ),
    HFCase(
        "convnext",
        "convolutional",
        _model(
            "ConvNextConfig",
            "ConvNextForImageClassification",
            num_stages=2,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            num_labels=5,
        ),
        _image,
        (2, 5),
        _batch_dim,
        ("aten.gelu",),
    ),
]


def export_hf_case(case: HFCase) -> tuple[MainOutput, torch.export.ExportedProgram]:
    import copy

    eager = case.make()
    inputs = case.inputs(case.sizes[0])
    dynamic = case.dynamic() if case.dynamic else None
    ep = torch.export.export(copy.deepcopy(eager), (), inputs, dynamic_shapes=dynamic, strict=False)
    return eager, ep

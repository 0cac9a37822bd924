"""PyTorch counterparts of the flax_s2s models, same sizes and same work per step, for bench/.

Only the bench scripts import this (torch is in the optional `bench` extra).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoids(length: int, d_model: int) -> torch.Tensor:
    """[length, d_model] sinusoidal positions (sin on even, cos on odd features)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    scale = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale)
    return table


class TorchTransformer(nn.Module):
    """Pre-LayerNorm encoder-decoder (nn.Transformer), embeddings, sinusoids, output projection."""

    def __init__(self, vocab: int, d_model: int, heads: int, mlp_dim: int, enc_layers: int,
                 dec_layers: int, max_len: int = 64):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, d_model)
        self.tgt_embed = nn.Embedding(vocab, d_model)
        self.register_buffer("positions", sinusoids(max_len, d_model))
        self.transformer = nn.Transformer(
            d_model, heads, enc_layers, dec_layers, mlp_dim, dropout=0.0, batch_first=True,
            norm_first=True,
        )
        self.output_proj = nn.Linear(d_model, vocab)
        self.scale = math.sqrt(d_model)

    def forward(self, src_tokens: torch.Tensor, tgt_inputs: torch.Tensor) -> torch.Tensor:
        src = self.src_embed(src_tokens) * self.scale + self.positions[: src_tokens.shape[1]]
        tgt = self.tgt_embed(tgt_inputs) * self.scale + self.positions[: tgt_inputs.shape[1]]
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_inputs.shape[1])
        hidden = self.transformer(src, tgt, tgt_mask=causal, tgt_is_causal=True)
        return self.output_proj(hidden)


class TorchLstmAttention(nn.Module):
    """Bidirectional LSTM encoder, LSTM decoder with input feeding and additive attention: the
    layout of flax_s2s.models.rnn.RnnSeq2Seq (norm "none"), decoder stepped in Python."""

    def __init__(self, vocab: int, emb_dim: int, hidden: int, attention_dim: int):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, emb_dim)
        self.tgt_embed = nn.Embedding(vocab, emb_dim)
        self.encoder = nn.LSTM(emb_dim, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.decoder_cell = nn.LSTMCell(emb_dim + hidden, hidden)
        self.query_proj = nn.Linear(hidden, attention_dim, bias=False)
        self.key_proj = nn.Linear(2 * hidden, attention_dim)
        self.energy = nn.Linear(attention_dim, 1, bias=False)
        self.attentional = nn.Linear(hidden + 2 * hidden, hidden)
        self.output_proj = nn.Linear(hidden, vocab)

    def forward(self, src_tokens: torch.Tensor, tgt_inputs: torch.Tensor) -> torch.Tensor:
        memory, _ = self.encoder(self.src_embed(src_tokens))  # [batch, src, 2 * hidden]
        keys = self.key_proj(memory)
        h = torch.tanh(self.bridge(memory.mean(1)))
        c, feed = torch.zeros_like(h), torch.zeros_like(h)
        embedded = self.tgt_embed(tgt_inputs)
        logits = []
        for t in range(tgt_inputs.shape[1]):
            h, c = self.decoder_cell(torch.cat([embedded[:, t], feed], -1), (h, c))
            energies = self.energy(torch.tanh(keys + self.query_proj(h)[:, None])).squeeze(-1)
            context = torch.einsum("bs,bsf->bf", torch.softmax(energies, -1), memory)
            feed = torch.tanh(self.attentional(torch.cat([h, context], -1)))
            logits.append(self.output_proj(feed))
        return torch.stack(logits, 1)


def make_train_step(model: nn.Module, learning_rate: float = 1e-3, clip: float = 1.0,
                    autocast: torch.dtype | None = None):
    """One AdamW step with global-norm clipping on (src, tgt_inputs, tgt_tokens): what the
    flax_s2s train step does (optax adamw after clip_by_global_norm). With `autocast`
    (torch.bfloat16), forward and loss run under `torch.autocast("cpu", dtype=autocast)`;
    parameters and optimizer stay float32."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98),
                                  weight_decay=1e-4, foreach=True)
    loss_fn = nn.CrossEntropyLoss()

    def step(src_tokens, tgt_inputs, tgt_tokens):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            logits = model(src_tokens, tgt_inputs)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_tokens.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss

    return step

"""The trainer: loss falls, schedule shape, exact resume from a checkpoint, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from modaverse_agent.errors import ModelError
from modaverse_agent.training.trainer import TrainConfig, Trainer, batch_order, lr_lambda


class Toy(nn.Module):
    """A frozen base with a trainable head and dropout (so RNG state matters for resume)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.base = nn.Linear(4, 16)
        self.base.requires_grad_(False)
        self.drop = nn.Dropout(0.2)
        self.scale = nn.Parameter(torch.ones(16))  # a vector before the matrix: optimizer order differs
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        pred = self.head(self.drop(torch.tanh(self.base(x))) * self.scale).squeeze(-1)
        return type("Out", (), {"loss": ((pred - y) ** 2).mean()})()


def data(n: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(n, 4, generator=g)
    return [(x, x.sum() * 0.5) for x in xs]


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([b[0] for b in batch]), "y": torch.stack([b[1] for b in batch])}


def cfg(tmp_path: Path, **kw: Any) -> TrainConfig:
    base = {"output_dir": str(tmp_path), "max_steps": 30, "batch_size": 8, "lr": 0.05, "warmup_steps": 3}
    return TrainConfig(**{**base, **kw})


def test_loss_falls_and_metrics_are_logged(tmp_path: Path) -> None:
    history = Trainer(Toy(), data(), collate, cfg(tmp_path)).train()
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-5:]) / 5
    assert last < 0.5 * first
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 30 and '"grad_norm"' in lines[0]
    assert (tmp_path / "checkpoint-30" / "trainer_state.safetensors").is_file()


def test_only_trainable_parameters_change(tmp_path: Path) -> None:
    model = Toy()
    before = model.base.weight.clone()
    Trainer(model, data(), collate, cfg(tmp_path, max_steps=3)).train()
    assert torch.equal(before, model.base.weight)


def test_resume_reproduces_the_same_loss_curve(tmp_path: Path) -> None:
    straight = Trainer(Toy(), data(), collate, cfg(tmp_path / "a", grad_accum=2, save_every=10)).train()
    Trainer(Toy(), data(), collate, cfg(tmp_path / "b", grad_accum=2)).train(stop_at=12)  # mid-epoch stop
    resumed = Trainer(Toy(), data(), collate, cfg(tmp_path / "b", grad_accum=2))
    resumed.load_checkpoint(tmp_path / "b" / "checkpoint-12")
    rest = resumed.train()
    assert [round(h["loss"], 6) for h in rest] == [round(h["loss"], 6) for h in straight]
    assert rest[-1]["loss"] == straight[-1]["loss"]


def test_schedule_warms_up_then_decays() -> None:
    f = lr_lambda(TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)


def test_batch_order_is_seeded_and_covers_everything() -> None:
    a, b = batch_order(10, 4, 0, 0), batch_order(10, 4, 0, 0)
    assert a == b and sorted(i for batch in a for i in batch) == list(range(10)) and [len(x) for x in a] == [4, 4, 2]
    assert batch_order(10, 4, 0, 1) != a


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training samples"):
        Trainer(Toy(), [], collate, cfg(tmp_path))
    frozen = Toy().requires_grad_(False)
    with pytest.raises(ModelError, match="no trainable parameters"):
        Trainer(frozen, data(), collate, cfg(tmp_path))
    with pytest.raises(ModelError, match=r"no trainer_state\.json"):
        Trainer(Toy(), data(), collate, cfg(tmp_path)).load_checkpoint(tmp_path / "nope")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")

"""Small real models the tests export themselves (no downloads)."""

from __future__ import annotations

from pathlib import Path


def export_tiny_cnn(path: Path, dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:
    """A tiny torch CNN (conv 3->8, conv 8->16 stride 2, global pool, fc 16->10) at 3x32x32."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    ).eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 32, 32),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic_axes,
        )

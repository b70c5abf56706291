"""Payload codecs for split inference: what the device sends to the edge at a cut.

Encode/decode are pure numpy + stdlib (json, struct, io), so this file can be copied
standalone onto a board (the probe agent reuses the same logic). Only :func:`fit_pca`
imports scikit-learn, lazily.

Wire format of every encoded payload (self-describing, the header is counted in the bytes)::

    b"EAP1" | uint32 little-endian header length | JSON header | raw data

Codecs
- ``fp32``: the tensor as float32, raw.
- ``fp16``: cast to float16.
- ``int8``: affine per-tensor quantisation, ``q = clip(round(x / scale) + zero_point, -128, 127)``
  with ``scale = (max - min) / 255``; decode ``(q - zero_point) * scale``.
- ``pca``: channel-wise PCA (axis 1 of an NCHW or NC tensor): every spatial position's C-vector
  is projected on the first k principal components fitted on calibration activations; the k
  coefficients per position are sent as float16. The basis (mean + components) lives on both
  ends (it is not in the payload); it is saved with :meth:`PcaBasis.to_bytes`.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"EAP1"
CODECS: tuple[str, ...] = ("fp32", "fp16", "int8", "pca")


class CodecError(ValueError):
    """A payload cannot be encoded or decoded (bad codec name, corrupt bytes, missing basis)."""


@dataclass(frozen=True)
class PcaBasis:
    """A channel-wise PCA basis: ``mean`` (C,) and ``components`` (k, C), float32."""

    mean: np.ndarray
    components: np.ndarray

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def channels(self) -> int:
        return int(self.components.shape[1])

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PcaBasis:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(mean=np.asarray(z["mean"], np.float32), components=np.asarray(z["components"], np.float32))


def _channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (N * prod(...), C)."""
    if x.ndim < 2:
        raise CodecError(f"pca needs a tensor with a channel axis (ndim >= 2), got shape {x.shape}")
    moved = np.moveaxis(x, 1, -1)
    return moved.reshape(-1, x.shape[1])


def _pack(header: dict, data: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + data


def _unpack(blob: bytes) -> tuple[dict, memoryview]:
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise CodecError("not an edgeatlas payload (bad magic)")
    (n,) = struct.unpack("<I", blob[4:8])
    if 8 + n > len(blob):
        raise CodecError("truncated payload header")
    try:
        header = json.loads(bytes(blob[8 : 8 + n]))
    except ValueError as exc:
        raise CodecError(f"corrupt payload header: {exc}") from exc
    return header, memoryview(blob)[8 + n :]


def int8_params(x: np.ndarray) -> tuple[float, int]:
    """Affine per-tensor int8 parameters (scale, zero_point) covering [min(x, 0), max(x, 0)]."""
    lo = float(min(np.min(x), 0.0)) if x.size else 0.0
    hi = float(max(np.max(x), 0.0)) if x.size else 0.0
    scale = (hi - lo) / 255.0
    if not np.isfinite(scale) or scale <= 0.0:
        return 1.0, 0
    zero_point = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return scale, zero_point


def encode(x: np.ndarray, codec: str, pca: PcaBasis | None = None) -> bytes:
    """Encode a float tensor into payload bytes with ``codec``."""
    x = np.asarray(x)
    header: dict = {"codec": codec, "shape": list(x.shape), "dtype": str(x.dtype)}
    if codec == "fp32":
        return _pack(header, np.ascontiguousarray(x, dtype="<f4").tobytes())
    if codec == "fp16":
        return _pack(header, np.ascontiguousarray(x, dtype="<f2").tobytes())
    if codec == "int8":
        xf = x.astype(np.float32)
        scale, zp = int8_params(xf)
        q = np.clip(np.round(xf / scale) + zp, -128, 127).astype(np.int8)
        header.update(scale=scale, zero_point=zp)
        return _pack(header, q.tobytes())
    if codec == "pca":
        if pca is None:
            raise CodecError("codec 'pca' needs a fitted PcaBasis")
        if x.ndim < 2 or x.shape[1] != pca.channels:
            raise CodecError(f"pca basis has {pca.channels} channels, payload shape is {x.shape}")
        flat = _channels_last(x.astype(np.float32))
        coeffs = (flat - pca.mean) @ pca.components.T  # (M, k)
        header.update(k=pca.k)
        return _pack(header, np.ascontiguousarray(coeffs, dtype="<f2").tobytes())
    raise CodecError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")


def decode(blob: bytes, pca: PcaBasis | None = None) -> np.ndarray:
    """Decode payload bytes back to a float32 tensor of the original shape."""
    header, data = _unpack(blob)
    codec = header.get("codec")
    shape = tuple(int(s) for s in header.get("shape", ()))
    count = int(np.prod(shape)) if shape else 1
    try:
        if codec == "fp32":
            return np.frombuffer(data, dtype="<f4", count=count).reshape(shape).astype(np.float32)
        if codec == "fp16":
            return np.frombuffer(data, dtype="<f2", count=count).reshape(shape).astype(np.float32)
        if codec == "int8":
            q = np.frombuffer(data, dtype=np.int8, count=count).reshape(shape)
            return ((q.astype(np.float32) - float(header["zero_point"])) * float(header["scale"])).astype(np.float32)
        if codec == "pca":
            if pca is None:
                raise CodecError("codec 'pca' needs the PcaBasis used to encode")
            k = int(header["k"])
            if k != pca.k or len(shape) < 2 or shape[1] != pca.channels:
                raise CodecError("pca basis does not match the payload")
            rest = (shape[0],) + shape[2:]
            m = int(np.prod(rest))
            coeffs = np.frombuffer(data, dtype="<f2", count=m * k).reshape(m, k).astype(np.float32)
            flat = coeffs @ pca.components + pca.mean  # (M, C)
            return np.moveaxis(flat.reshape(rest + (shape[1],)), -1, 1).astype(np.float32)
    except (ValueError, KeyError) as exc:
        raise CodecError(f"corrupt {codec} payload: {exc}") from exc
    raise CodecError(f"unknown codec {codec!r} in payload header")


def roundtrip(x: np.ndarray, codec: str, pca: PcaBasis | None = None) -> tuple[np.ndarray, int]:
    """Encode then decode; returns (decoded tensor, encoded bytes)."""
    blob = encode(x, codec, pca)
    return decode(blob, pca), len(blob)


def default_pca_k(channels: int) -> int:
    """k used by the zoo: a quarter of the channels, at least 1."""
    return max(1, (int(channels) + 3) // 4)


def fit_pca(activations: np.ndarray, k: int | None = None, seed: int = 0) -> PcaBasis:
    """Fit a channel-wise PCA basis on calibration activations (N, C, ...) with scikit-learn."""
    from sklearn.decomposition import PCA

    flat = _channels_last(np.asarray(activations, np.float32))
    channels = flat.shape[1]
    k = default_pca_k(channels) if k is None else int(k)
    k = max(1, min(k, channels, flat.shape[0]))
    if flat.shape[0] > 20000:
        rng = np.random.default_rng(seed)
        flat = flat[rng.choice(flat.shape[0], 20000, replace=False)]
    # covariance_eigh: one C x C eigendecomposition, fast when rows >= channels (the usual case);
    # randomized for few rows of many channels (a flattened vector)
    solver = "covariance_eigh" if flat.shape[0] >= channels else "randomized"
    model = PCA(n_components=k, svd_solver=solver, random_state=seed)
    model.fit(flat)
    return PcaBasis(mean=model.mean_.astype(np.float32), components=model.components_.astype(np.float32))

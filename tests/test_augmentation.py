"""Rotation, zoom, brightness, contrast and grayscale (portanet.data.augmentation) on every backend.

References are independent of the code under test: a float64 NumPy bilinear sampler written
with loops (below), ``np.rot90``, the landing point of a single bright pixel worked out in polar
coordinates, torch's ``grid_sample`` (when torch is installed) and the NumPy formulas for the
pixel-value augmentations. The random versions are checked by replaying their draws from a
generator with the same seed, so each output sample is compared with the exact transform it got.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import data
from portanet.data import augmentation as aug

TOL = {"float64": 1e-12, "float32": 2e-5}


def _images(n=4, c=3, h=6, w=5, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, c, h, w))


def _host(x):
    return np.asarray(pn.to_numpy(x), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# The NumPy float64 reference: inverse mapping + bilinear interpolation, one pixel at a time.
# ---------------------------------------------------------------------------------------------
def _sample(img: np.ndarray, r: float, c: float, fill: float) -> np.ndarray:
    """Bilinear value of img (C, H, W) at (r, c); a corner outside the image counts as fill."""
    _, h, w = img.shape
    r0, c0 = math.floor(r), math.floor(c)
    total = np.zeros(img.shape[0])
    for rr in (r0, r0 + 1):
        for cc in (c0, c0 + 1):
            weight = (1 - abs(r - rr)) * (1 - abs(c - cc))
            value = img[:, rr, cc] if 0 <= rr < h and 0 <= cc < w else np.full(img.shape[0], fill)
            total += weight * value
    return total


def reference_rotate(x: np.ndarray, degrees, fill: float) -> np.ndarray:
    """Output pixel (i, j) of image n takes the input at the point that rotating by +theta
    (counter-clockwise on the screen) carries onto (i, j): rotate (i, j) back by -theta."""
    n, _, h, w = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.empty_like(x, dtype=np.float64)
    for k in range(n):
        t = math.radians(float(np.broadcast_to(degrees, (n,))[k]))
        for i in range(h):
            for j in range(w):
                # screen coordinates: x to the right, y up
                px, py = j - cx, cy - i
                sx = px * math.cos(-t) - py * math.sin(-t)
                sy = px * math.sin(-t) + py * math.cos(-t)
                out[k, :, i, j] = _sample(x[k], cy - sy, cx + sx, fill)
    return out


def reference_zoom(x: np.ndarray, factors, fill: float) -> np.ndarray:
    n, _, h, w = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.empty_like(x, dtype=np.float64)
    for k in range(n):
        s = float(np.broadcast_to(factors, (n,))[k])
        for i in range(h):
            for j in range(w):
                out[k, :, i, j] = _sample(x[k], cy + (i - cy) / s, cx + (j - cx) / s, fill)
    return out


def _replay_uniform(seed: int, n: int, low: float, high: float, dtype: str) -> np.ndarray:
    """The (n,) uniforms a fresh generator with ``seed`` draws first (the augmentation's draw)."""
    gen = pn.random.Generator(seed=seed)
    return _host(gen.uniform((n,), low=low, high=high, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# Rotation and zoom
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rotation_by_quarter_turns_equals_rot90(backend, dtype):
    x = _images(h=5, w=5)
    for degrees, k in ((90.0, 1), (180.0, 2), (270.0, 3), (-90.0, 3)):
        out = aug.rotate(backend.asarray(x, dtype), degrees)
        assert_on_backend(out, backend, dtype)
        expected = np.rot90(x.astype(dtype), k, axes=(2, 3))
        # every pixel, border included: the source points are grid points up to rounding
        np.testing.assert_allclose(_host(out), expected, rtol=0, atol=TOL[dtype],
                                   err_msg=f"{degrees} degrees")


def test_angle_zero_and_zoom_one_are_the_identity(backend):
    x = _images()
    for dtype in ("float64", "float32"):
        xb = backend.asarray(x, dtype)
        gen = pn.random.Generator(seed=0)
        for out in (aug.rotate(xb, 0.0, fill=5.0), aug.zoom(xb, 1.0, fill=5.0),
                    aug.random_rotation(xb, gen, max_degrees=0.0),
                    aug.random_zoom(xb, gen, zoom_range=(1.0, 1.0)),
                    aug.random_brightness(xb, gen, max_delta=0.0),
                    aug.random_grayscale(xb, gen, p=0.0)):
            assert_on_backend(out, backend, dtype)
            np.testing.assert_array_equal(_host(out), x.astype(dtype))


def test_a_rotated_bright_pixel_lands_where_the_rotation_carries_it(backend):
    """On an 11 x 11 image the pixel at row 2, col 9 is (4, 3) from the centre (x right, y up):
    radius 5 at angle atan2(3, 4). Rotating it by theta counter-clockwise puts it at radius 5,
    angle atan2(3, 4) + theta: a grid point for theta = 90 - 36.87 and -36.87 degrees."""
    size, row, col = 11, 2, 9
    c = (size - 1) / 2
    x = np.zeros((1, 1, size, size))
    x[0, 0, row, col] = 1.0
    radius = math.hypot(col - c, c - row)
    phi = math.atan2(c - row, col - c)
    for theta in (math.pi / 2 - phi, -phi, math.pi - phi):
        px, py = radius * math.cos(phi + theta), radius * math.sin(phi + theta)
        i, j = round(c - py), round(c + px)  # back to (row, col)
        assert abs(c - py - i) < 1e-9 and abs(c + px - j) < 1e-9
        out = _host(aug.rotate(backend.asarray(x, "float64"), math.degrees(theta)))[0, 0]
        assert abs(out[i, j] - 1.0) < 1e-12, (math.degrees(theta), np.argwhere(out > 0.5))
        # the neighbours map back to within one pixel of the source and get part of it
        others = np.delete(out.ravel(), i * size + j)
        assert others.max() < 0.5
        lit = np.argwhere(out > 1e-12)
        assert np.all(np.hypot(lit[:, 0] - i, lit[:, 1] - j) < math.sqrt(2) + 1e-9), lit


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rotate_and_zoom_match_the_bilinear_reference(backend, dtype):
    x = _images(n=4, h=6, w=5)
    degrees = np.asarray([17.0, -33.5, 123.0, 7.25])
    factors = np.asarray([0.7, 1.3, 2.0, 0.95])
    xb = backend.asarray(x, dtype)
    for fill in (0.0, -2.0):
        out = aug.rotate(xb, backend.asarray(degrees, dtype), fill=fill)
        assert_on_backend(out, backend, dtype)
        np.testing.assert_allclose(_host(out), reference_rotate(x.astype(dtype), degrees, fill),
                                   rtol=0, atol=10 * TOL[dtype])
        out = aug.zoom(xb, backend.asarray(factors, dtype), fill=fill)
        assert_on_backend(out, backend, dtype)
        np.testing.assert_allclose(_host(out), reference_zoom(x.astype(dtype), factors, fill),
                                   rtol=0, atol=10 * TOL[dtype])


def test_rotate_matches_torch_grid_sample():
    """A second, independent reference: torch's bilinear grid_sample (align_corners=True puts
    -1 and +1 on the centres of the border pixels; zeros padding is fill = 0)."""
    torch = pytest.importorskip("torch")
    x = _images(n=3, h=7, w=6)
    degrees = np.asarray([25.0, -70.0, 200.0])
    n, _, h, w = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    grid = np.empty((n, h, w, 2))
    for k, deg in enumerate(degrees):
        t = math.radians(deg)
        for i in range(h):
            for j in range(w):
                px, py = j - cx, cy - i
                sx = px * math.cos(t) + py * math.sin(t)
                sy = -px * math.sin(t) + py * math.cos(t)
                grid[k, i, j] = ((cx + sx) / cx - 1, (cy - sy) / cy - 1)
    expected = torch.nn.functional.grid_sample(
        torch.from_numpy(x), torch.from_numpy(grid), mode="bilinear", padding_mode="zeros",
        align_corners=True).numpy()
    np.testing.assert_allclose(aug.rotate(x, degrees), expected, rtol=0, atol=1e-12)


def test_random_rotation_and_zoom_use_one_draw_per_sample(backend):
    n = 6
    x = np.repeat(_images(n=1, h=5, w=5), n, axis=0)  # identical images
    xb = backend.asarray(x, "float64")
    out = _host(aug.random_rotation(xb, pn.random.Generator(seed=7), max_degrees=40.0,
                                    fill=0.5))
    degrees = _replay_uniform(7, n, -40.0, 40.0, "float64")
    assert np.all(np.abs(degrees) <= 40.0) and len(np.unique(degrees)) == n
    np.testing.assert_allclose(out, reference_rotate(x, degrees, 0.5), rtol=0, atol=1e-11)
    assert len({out[k].tobytes() for k in range(n)}) == n, "samples got the same angle"

    out = _host(aug.random_zoom(xb, pn.random.Generator(seed=8), zoom_range=(0.6, 1.6)))
    factors = _replay_uniform(8, n, 0.6, 1.6, "float64")
    assert np.all((factors >= 0.6) & (factors <= 1.6))
    np.testing.assert_allclose(out, reference_zoom(x, factors, 0.0), rtol=0, atol=1e-11)
    assert len({out[k].tobytes() for k in range(n)}) == n, "samples got the same factor"


# ---------------------------------------------------------------------------------------------
# Brightness, contrast, grayscale
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_brightness(backend, dtype):
    n = 8
    x = np.repeat(_images(n=1), n, axis=0)
    out = aug.random_brightness(backend.asarray(x, dtype), pn.random.Generator(seed=3),
                                max_delta=0.4)
    assert_on_backend(out, backend, dtype)
    delta = _replay_uniform(3, n, -0.4, 0.4, dtype)
    assert np.all(np.abs(delta) <= 0.4) and len(np.unique(delta)) == n
    expected = x.astype(dtype) + delta[:, None, None, None]
    np.testing.assert_allclose(_host(out), expected, rtol=0, atol=TOL[dtype])
    clipped = aug.random_brightness(backend.asarray(x, dtype), pn.random.Generator(seed=3),
                                    max_delta=0.4, clip=(-0.5, 0.5))
    np.testing.assert_allclose(_host(clipped), np.clip(expected, -0.5, 0.5), rtol=0,
                               atol=TOL[dtype])
    assert np.abs(expected).max() > 0.5, "the clip test clips nothing"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_contrast(backend, dtype):
    n = 8
    x = np.repeat(_images(n=1), n, axis=0)
    out = aug.random_contrast(backend.asarray(x, dtype), pn.random.Generator(seed=4),
                              lower=0.2, upper=1.8)
    assert_on_backend(out, backend, dtype)
    factor = _replay_uniform(4, n, 0.2, 1.8, dtype)[:, None, None, None]
    x64 = x.astype(dtype).astype(np.float64)
    mean = x64.mean(axis=(1, 2, 3), keepdims=True)  # one mean per image, all channels
    expected = (x64 - mean) * factor + mean
    np.testing.assert_allclose(_host(out), expected, rtol=0, atol=TOL[dtype])
    np.testing.assert_allclose(_host(out).mean(axis=(1, 2, 3)), mean[:, 0, 0, 0], atol=TOL[dtype])
    assert len({_host(out)[k].tobytes() for k in range(n)}) == n
    clipped = aug.random_contrast(backend.asarray(x, dtype), pn.random.Generator(seed=4),
                                  lower=0.2, upper=1.8, clip=(-0.3, 0.3))
    np.testing.assert_allclose(_host(clipped), np.clip(expected, -0.3, 0.3), rtol=0,
                               atol=TOL[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_grayscale(backend, dtype):
    n = 16
    x = _images(n=n, c=3)
    out = aug.random_grayscale(backend.asarray(x, dtype), pn.random.Generator(seed=5), p=0.5)
    assert_on_backend(out, backend, dtype)
    coin = pn.to_numpy(pn.random.Generator(seed=5).bernoulli((n,), p=0.5, dtype="bool"))
    assert 0 < coin.sum() < n, "pick a seed where both outcomes occur"
    x64 = x.astype(dtype).astype(np.float64)
    luma = 0.299 * x64[:, 0] + 0.587 * x64[:, 1] + 0.114 * x64[:, 2]
    gray = np.repeat(luma[:, None], 3, axis=1)
    expected = np.where(coin[:, None, None, None], gray, x64)
    np.testing.assert_allclose(_host(out), expected, rtol=0, atol=TOL[dtype])
    # always gray with p = 1; one channel is already gray: returned as it is
    np.testing.assert_allclose(_host(aug.random_grayscale(backend.asarray(x, dtype),
                                                          pn.random.Generator(0), p=1.0)),
                               gray, rtol=0, atol=TOL[dtype])
    one = backend.asarray(x[:, :1], dtype)
    same = aug.random_grayscale(one, pn.random.Generator(0), p=1.0)
    assert_on_backend(same, backend, dtype)
    np.testing.assert_array_equal(_host(same), x[:, :1].astype(dtype))


# ---------------------------------------------------------------------------------------------
# The Augment pipeline, a compiled step, and bad arguments
# ---------------------------------------------------------------------------------------------
NEW_NAMES = ["rotate", "zoom", "brightness", "contrast", "grayscale"]


def test_augment_names_run_on_the_device(backend):
    x = backend.asarray(_images(n=4, c=3), "float32")
    for name in NEW_NAMES:
        out = data.Augment([name], seed=0)(x)
        assert_on_backend(out, backend, "float32")
        assert out.shape == x.shape
    out = data.Augment([*NEW_NAMES, "flip"], seed=1)(x)
    assert_on_backend(out, backend, "float32")
    with pytest.raises(ValueError, match="unknown augmentation 'warp'.*'rotate'"):
        data.Augment(["warp"])


def _fit_on_jax(jit: bool):
    x = _images(n=16, c=3, h=4, w=4, seed=2)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    with pn.use_backend("jax"):
        model = pn.Sequential([pn.layers.Flatten(), pn.layers.Dense(48, 2)],
                              loss="softmax_cross_entropy", optimizer=pn.optimizers.SGD(0.1),
                              seed=0, dtype="float64", jit_compile=jit)
        augment = data.Augment([*NEW_NAMES, "flip"], seed=3)
        history = model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0, seed=0,
                            augment=augment)
        after_first = model.engine.compilations
        history2 = model.fit(x, y, epochs=3, initial_epoch=1, batch_size=8, shuffle=False,
                             verbose=0, seed=0, augment=augment)
        weights = {k: np.asarray(pn.to_numpy(v)) for k, v in model.named_parameters().items()}
    return history["loss"] + history2["loss"], weights, after_first, model.engine.compilations


def test_augmentations_run_inside_a_compiled_jax_step():
    """All five under jax.jit: the same losses and weights as eager (the generator's key is
    threaded through the step), and no compilation after the first epoch."""
    pytest.importorskip("jax")
    losses_e, weights_e, _, _ = _fit_on_jax(jit=False)
    losses_c, weights_c, after_first, total = _fit_on_jax(jit=True)
    assert after_first == 1 and total == 1, (after_first, total)
    np.testing.assert_allclose(losses_c, losses_e, rtol=1e-12)
    for k in weights_e:
        np.testing.assert_allclose(weights_c[k], weights_e[k], rtol=1e-12, atol=1e-14)
    assert all(np.isfinite(losses_c))


def test_bad_arguments_say_what_was_received(backend):
    x = backend.asarray(_images(), "float32")
    gen = pn.random.Generator(seed=0)
    with pytest.raises(ValueError, match=r"max_degrees must be >= 0 .* received -5\.0"):
        aug.random_rotation(x, gen, max_degrees=-5)
    with pytest.raises(ValueError, match=r"zoom_range must satisfy .* low > 0.0, "
                                         r"received \(0.0, 1.1\)"):
        aug.random_zoom(x, gen, zoom_range=(0.0, 1.1))
    with pytest.raises(ValueError, match=r"low <= high .* received \(1.2, 1.1\)"):
        aug.random_zoom(x, gen, zoom_range=(1.2, 1.1))
    with pytest.raises(ValueError, match="zoom_range must be a pair"):
        aug.random_zoom(x, gen, zoom_range=1.1)
    with pytest.raises(ValueError, match="factor must be > 0, received -1"):
        aug.zoom(x, -1)
    with pytest.raises(ValueError, match=r"batch of images \(N, C, H, W\), received shape "
                                         r"\(4, 3, 6\)"):
        aug.random_rotation(backend.asarray(np.zeros((4, 3, 6)), "float32"), gen)
    with pytest.raises(TypeError, match="needs floating-point images; received dtype"):
        aug.random_brightness(backend.asarray(np.zeros((2, 1, 3, 3)), "int64"), gen)
    with pytest.raises(ValueError, match="max_delta must be >= 0, received -0.1"):
        aug.random_brightness(x, gen, max_delta=-0.1)
    with pytest.raises(ValueError, match=r"clip must satisfy low <= high"):
        aug.random_brightness(x, gen, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"\(lower, upper\) must satisfy .* received "
                                         r"\(-0.5, 1.0\)"):
        aug.random_contrast(x, gen, lower=-0.5, upper=1.0)
    with pytest.raises(ValueError, match="received 4 channels"):
        aug.random_grayscale(backend.asarray(np.zeros((2, 4, 3, 3)), "float32"), gen, p=0.5)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], received "
                                         r"p=1.5"):
        aug.random_grayscale(x, gen, p=1.5)
    with pytest.raises(ValueError, match=r"one per sample, shape \(4,\); received shape "
                                         r"\(3,\)"):
        aug.rotate(x, backend.asarray(np.zeros(3), "float32"))
    with pytest.raises(ValueError, match="fill must be a finite number"):
        aug.rotate(x, 10.0, fill=float("nan"))

"""Fusion metrics: closed forms, symmetries, each convention's documented quirk, real-pair sanity."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.signal import convolve2d, correlate2d

from maefuse_deploy.errors import InputError
from maefuse_deploy.metrics import CONVENTIONS, METRIC_NAMES, evaluate
from maefuse_deploy.metrics.gradient import nabf
from maefuse_deploy.metrics.information import mutual_information
from maefuse_deploy.metrics.nlpd import NEIGHBOUR_KERNELS, _up, nlpd
from maefuse_deploy.metrics.structural import ssim_skimage019, vifp, vifp_terms

DB_OFFSET = 20 * math.log10(255)  # 48.1308 dB


def texture(seed: int, shape: tuple[int, int] = (64, 80), lo: int = 0, hi: int = 256) -> np.ndarray:
    """Smooth random uint8 texture (blurred noise stretched to [lo, hi)): edges of every orientation."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.random(shape), (0, 0), 2.0)
    x = (x - x.min()) / (x.max() - x.min())
    return (lo + x * (hi - 1 - lo)).round().astype(np.uint8)


@pytest.fixture(scope="module")
def trio() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IR, VIS and a fused image that keeps the stronger local detail of each (has artifacts and losses)."""
    a, b = texture(1), texture(2)
    f = np.clip(0.6 * a.astype(float) + 0.6 * b - 30 + 8 * np.sin(np.arange(80) / 3.0), 0, 255)
    return a, b, f.round().astype(np.uint8)


# ---------------------------------------------------------------- closed forms


def test_constant_image_has_no_information_spread_or_detail() -> None:
    f = np.full((64, 80), 97, np.uint8)
    r = evaluate(f, texture(1), texture(2))
    assert r["EN"] == 0.0 and r["SD"] == 0.0 and r["SF"] == 0.0 and r["AG"] == 0.0
    assert math.isnan(r["CC"])  # correlation with a constant image is undefined, not 0


def test_identical_images() -> None:
    x = texture(3)
    r = evaluate(x, x, x)
    assert r["SSIM"] == pytest.approx(1.0, abs=1e-12)
    assert r["CC"] == pytest.approx(1.0, abs=1e-12)
    assert r["PSNR"] == math.inf and r["PSNR_tang"] == math.inf
    assert r["VIF"] == pytest.approx(2.0, abs=1e-6)  # VIFp(X,X) = 1 up to the 1e-10 noise floor
    assert r["Nabf"] == 0.0  # no pixel where F's gradient exceeds both sources'
    assert r["NLPD"] == 0.0
    assert math.isnan(r["SCD"])  # F - A = 0 has no correlation
    # Identical gradients tie, and the reference then uses G = gF: Q = Qg(gF) * Qa(1) per pixel.
    sx = convolve2d(x.astype(float), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], mode="same")
    sy = convolve2d(x.astype(float), [[1, 2, 1], [0, 0, 0], [-1, -2, -1]], mode="same")
    g = np.hypot(sx, sy)
    q = 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * 0.2))
    assert r["Qabf"] == pytest.approx((q * g).sum() / g.sum(), rel=1e-12)


def test_two_level_histogram_entropy_and_mutual_information() -> None:
    a = np.zeros((64, 80), np.uint8)
    a[:, 40:] = 255
    b = np.full_like(a, 128)
    r = evaluate(a, a, b)
    assert r["EN"] == pytest.approx(1.0, abs=1e-12)
    assert r["MI"] == pytest.approx(1.0, abs=1e-12)  # MI(A,F) = H = 1 bit; a constant B shares nothing
    # A four-level source seen through a two-level fused image keeps exactly the 1 bit F holds.
    four = np.repeat(np.array([0, 60, 120, 180], np.uint8), 20)[None, :].repeat(64, axis=0)
    assert mutual_information(four, (four >= 120).astype(np.uint8) * 200) == pytest.approx(1.0, abs=1e-12)


def test_ramp_and_stripes_give_known_sf_and_ag() -> None:
    m, n = 64, 80
    ramp = np.tile(2 * np.arange(n, dtype=np.uint8), (m, 1))
    r = evaluate(ramp, ramp, ramp, metrics="SF,AG")
    assert r["SF"] == pytest.approx(2.0, abs=1e-12)
    assert r["AG"] == pytest.approx(math.sqrt(2) * m * n / ((m - 1) * (n - 1)), rel=1e-12)
    # Period-2 stripes: the central differences inside cancel, only the one-sided border columns remain.
    stripes = np.tile(np.array([0, 10], np.uint8), (m, n // 2))
    r = evaluate(stripes, stripes, stripes, metrics="SF,AG")
    assert r["SF"] == pytest.approx(10.0, abs=1e-12)
    assert r["AG"] == pytest.approx(2 * m * (10 / math.sqrt(2)) / ((m - 1) * (n - 1)), rel=1e-12)
    # The stripes shifted by one pixel (10, 0, 10, ...) have the same row differences and border gradients.
    shifted = np.roll(stripes, 1, axis=1)
    assert evaluate(shifted, shifted, shifted, metrics="SF,AG") == pytest.approx(r, rel=1e-12)


def test_ssim_matches_a_direct_window_loop() -> None:
    x, y = texture(4, (48, 52)).astype(float), texture(5, (48, 52)).astype(float)
    w = np.outer(*(2 * [cv2.getGaussianKernel(11, 1.5)[:, 0]]))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(48 - 10):
        for j in range(52 - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    fused = x.astype(np.uint8)
    r = evaluate(fused, fused, y.astype(np.uint8), metrics="SSIM")
    assert r["SSIM"] == pytest.approx((1.0 + np.mean(values)) / 2, abs=1e-9)  # SSIM(F,IR) = 1 here


def _vifp_direct(ref: np.ndarray, dist: np.ndarray) -> float:
    """vifp_mscale written with scipy's 2-D correlation, to check the separable OpenCV path."""
    num = den = 0.0
    for s in range(4):
        n = 2 ** (4 - s) + 1
        k = np.exp(-((np.arange(n) - (n - 1) / 2) ** 2) / (2 * (n / 5) ** 2))
        win = np.outer(k, k) / np.outer(k, k).sum()
        if s:
            ref = correlate2d(ref, win, mode="valid")[::2, ::2]
            dist = correlate2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = correlate2d(ref, win, mode="valid"), correlate2d(dist, win, mode="valid")
        s1 = np.maximum(correlate2d(ref * ref, win, mode="valid") - mu1**2, 0)
        s2 = np.maximum(correlate2d(dist * dist, win, mode="valid") - mu2**2, 0)
        s12 = correlate2d(ref * dist, win, mode="valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g[s1 < 1e-10], sv[s1 < 1e-10] = 0, s2[s1 < 1e-10]
        s1[s1 < 1e-10] = 0
        g[s2 < 1e-10], sv[s2 < 1e-10] = 0, 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        num += np.log10(1 + g * g * s1 / (sv + 2)).sum()
        den += np.log10(1 + s1 / 2).sum()
    return num / den


def test_vifp_matches_a_direct_2d_implementation(trio: tuple[np.ndarray, ...]) -> None:
    a, _, f = (x.astype(float) for x in trio)
    assert vifp(a, f) == pytest.approx(_vifp_direct(a, f), rel=1e-10)


def test_more_contrast_gives_vifp_above_one() -> None:
    x = texture(6).astype(float)
    assert vifp(x, np.clip(1.5 * (x - 128) + 128, 0, 255)) > 1.0


# ---------------------------------------------------------------- symmetries


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_two_source_metrics_are_symmetric_in_ir_and_vis(name: str, trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    forward, swapped = evaluate(f, a, b, name), evaluate(f, b, a, name)
    for column, value in forward.items():
        if name == "tang2023" and column == "Nabf":
            continue  # T23 takes IR as the fused image: not symmetric, see test_tang2023_nabf_swaps_arguments
        if math.isnan(value):
            assert math.isnan(swapped[column]), column
        else:
            assert swapped[column] == pytest.approx(value, rel=1e-9, abs=1e-12), column


def test_statistics_of_f_are_invariant_to_transpose(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    r = evaluate(f, a, b, metrics="EN,SD,SF,AG")
    rt = evaluate(f.T.copy(), a.T.copy(), b.T.copy(), metrics="EN,SD,SF,AG")
    for column in r:
        assert rt[column] == pytest.approx(r[column], rel=1e-12), column


def test_nlpd_is_symmetric_and_grows_with_noise() -> None:
    x = texture(7).astype(float) / 255
    noise = np.random.default_rng(0).normal(0, 1, x.shape)
    d1, d2 = nlpd(x, x + 0.02 * noise), nlpd(x, x + 0.08 * noise)
    assert nlpd(x + 0.02 * noise, x) == pytest.approx(d1, rel=1e-12)
    assert 0 < d1 < d2


# ---------------------------------------------------------------- NLPD construction


def test_nlpd_neighbour_kernel_is_applied_as_a_convolution() -> None:
    from maefuse_deploy.metrics.filtering import convolve_same

    impulse = np.zeros((9, 9))
    impulse[4, 4] = 1.0
    response = convolve_same(impulse, NEIGHBOUR_KERNELS[0], "zero")
    # Convolution puts the tap at kernel offset (0, +2) two columns right of the impulse, as NLP_dist.m's conv2.
    assert response[4, 6] == pytest.approx(0.0072)
    assert response[4, 3] == pytest.approx(0.1493) and response[4, 5] == pytest.approx(0.1460)
    assert response[3, 4] == pytest.approx(0.1011) and response[5, 4] == pytest.approx(0.1015)
    assert response[4, 2] == 0.0


def test_pyramid_expansion_is_aligned_with_the_decimation() -> None:
    # Coarse pixel j is fine pixel 2j; the kernel reproduces linear functions, so inside the image a coarse
    # ramp expands to the fine ramp exactly, and a constant stays constant up to the borders.
    coarse = np.tile(2.0 * np.arange(20), (12, 1))
    fine = _up(coarse, (24, 40))
    assert np.allclose(fine[:, 3:-3], np.arange(40)[3:-3], atol=1e-12)
    assert np.allclose(_up(np.full((12, 20), 0.7), (23, 39)), 0.7, atol=1e-12)


# ---------------------------------------------------------------- convention quirks


def test_tang2022_sd_saturates_in_uint8() -> None:
    half = np.zeros((64, 80), np.uint8)
    half[:, 40:] = 200
    src = texture(1)
    # Mean 100: pixels below it saturate to 0, (200-100)^2 saturates to 255 -> sqrt(255 / 2).
    assert evaluate(half, src, src, "tang2022", "SD")["SD"] == pytest.approx(math.sqrt(127.5), abs=1e-12)
    assert evaluate(half, src, src, "default", "SD")["SD"] == pytest.approx(100.0, abs=1e-12)
    wide = texture(8)
    assert evaluate(wide, src, src, "tang2022", "SD")["SD"] <= math.sqrt(255) < 15.97 + 0.01


def test_tang2022_sf_is_on_unit_range(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    default, tang = evaluate(f, a, b, metrics="SF"), evaluate(f, a, b, "tang2022", "SF")
    assert tang["SF"] == pytest.approx(default["SF"] / 255, rel=1e-12)


def test_tang2022_vif_drops_scale_one_when_products_saturate() -> None:
    # With every grey level >= 16 each scale-1 product saturates at 255, all scale-1 variances clamp to 0,
    # and T22's VIF is exactly the scales 2-4 part of the float VIF.
    a, b, f = texture(1, lo=16), texture(2, lo=16), texture(9, lo=16)
    expected = 0.0
    for source in (a, b):
        num, den = vifp_terms(source.astype(float), f.astype(float))
        expected += num[1:].sum() / den[1:].sum()
    assert evaluate(f, a, b, "tang2022", "VIF")["VIF"] == pytest.approx(expected, rel=1e-12)
    assert evaluate(f, a, b, "default", "VIF")["VIF"] != pytest.approx(expected, rel=1e-3)


def test_tang2023_nabf_swaps_arguments(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    default = evaluate(f, a, b, metrics="Nabf")["Nabf"]
    tang = evaluate(f, a, b, "tang2023", "Nabf")["Nabf"]
    fa, fb, ff = (x.astype(float) for x in (a, b, f))
    assert default == pytest.approx(nabf(ff, fa, fb), rel=1e-12)
    assert tang == pytest.approx(nabf(fa, fb, ff), rel=1e-12)  # analysis_nabf(A, B, F): IR as the fused image
    assert abs(tang - default) > 0.2 * default


def test_tang2022_nabf_on_unit_range_weights_every_pixel_equally(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    tang = evaluate(f, a, b, "tang2022", "Nabf")["Nabf"]
    fa, fb, ff = (x.astype(float) / 255 for x in (a, b, f))
    assert tang == pytest.approx(nabf(ff, fa, fb), rel=1e-12)
    assert tang != pytest.approx(evaluate(f, a, b, metrics="Nabf")["Nabf"], rel=0.05)


def test_tang2022_qabf_ties_on_unit_range_lose_the_gradient_tie_bonus() -> None:
    x = texture(10)
    tang = evaluate(x, x, x, "tang2022", "Qabf")["Qabf"]
    # F = A = B: every gradient ties and G = gF, which on [0,1] data is g/255 instead of >= 1.
    sx = convolve2d(x / 255.0, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], mode="same")
    sy = convolve2d(x / 255.0, [[1, 2, 1], [0, 0, 0], [-1, -2, -1]], mode="same")
    g = np.hypot(sx, sy)
    q = 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * 0.2))
    assert tang == pytest.approx((q * g).sum() / g.sum(), rel=1e-9)
    assert tang < evaluate(x, x, x, metrics="Qabf")["Qabf"] - 0.2


def test_cddfuse_mi_is_in_nats() -> None:
    a, b, f = texture(1), texture(2), texture(11)
    bits = evaluate(f, a, b, metrics="MI")["MI"]
    assert evaluate(f, a, b, "cddfuse", "MI")["MI"] == pytest.approx(bits * math.log(2), rel=1e-12)


def test_tang_mi_merges_levels_254_and_255_in_the_joint_histogram() -> None:
    a = np.full((64, 80), 254, np.uint8)
    a[:, 40:] = 255
    b = np.full_like(a, 128)
    assert evaluate(a, a, b, metrics="MI")["MI"] == pytest.approx(1.0, abs=1e-12)
    for name in ("tang2023", "tang2022"):
        # H(A) = H(F) = 1 bit but the merged joint histograms have one bin each: H(A,F) = H(B,F) = 0, so
        # MI(A,F) = 1 + 1 - 0 = 2 bits and even the constant B gets MI(B,F) = 0 + 1 - 0 = 1 bit.
        assert evaluate(a, a, b, name, "MI")["MI"] == pytest.approx(3.0, abs=1e-12)


def test_vifb_mi_min_max_stretch_is_a_relabelling_of_grey_levels() -> None:
    # A stretch of a non-constant image to 0-255 maps distinct levels to distinct levels: MI is unchanged.
    a, b, f = texture(1, lo=30, hi=140), texture(2, lo=0, hi=90), texture(21, lo=100, hi=180)
    assert evaluate(f, a, b, "vifb", "MI")["MI"] == pytest.approx(evaluate(f, a, b, "cddfuse", "MI")["MI"], rel=1e-12)


def test_psnr_variants(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    r = evaluate(f, a, b, metrics="PSNR")
    mse = (np.mean((f - a.astype(float)) ** 2) + np.mean((f - b.astype(float)) ** 2)) / 2
    assert r["PSNR"] == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-12)
    assert r["PSNR_tang"] == pytest.approx(r["PSNR"] + 48.1308, abs=1e-4)
    assert evaluate(f, a, b, "tang2023", "PSNR")["PSNR"] == pytest.approx(r["PSNR"] + DB_OFFSET, rel=1e-12)
    cdd = evaluate(f, a, b, "cddfuse", "PSNR")["PSNR"]
    assert cdd == pytest.approx(10 * math.log10(float(f.max()) ** 2 / mse), rel=1e-12)
    # VIFB: with F - A = F - B = d everywhere, "mse" = sqrt(d^2 MN) / MN = d / sqrt(MN).
    src = texture(12, lo=0, hi=200)
    shifted = src + np.uint8(5)
    vifb = evaluate(shifted, src, src, "vifb", "PSNR")["PSNR"]
    assert vifb == pytest.approx(10 * math.log10(255**2 * math.sqrt(src.size) / 5), rel=1e-12)


def test_ssim_conventions(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    default = evaluate(f, a, b, metrics="SSIM")["SSIM"]
    assert evaluate(f, a, b, "vifb", "SSIM")["SSIM"] == pytest.approx(2 * default, rel=1e-12)
    cdd = evaluate(f, a, b, "cddfuse", "SSIM")["SSIM"]
    ff, fa, fb = (x.astype(float) for x in (f, a, b))
    assert cdd == pytest.approx(ssim_skimage019(ff, fa) + ssim_skimage019(ff, fb), rel=1e-12)
    x = texture(13)
    assert evaluate(x, x, x, "cddfuse", "SSIM")["SSIM"] == pytest.approx(2.0, abs=1e-6)  # a sum, not a mean
    assert evaluate(x, x, x, "tang2023", "SSIM")["SSIM"] == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(evaluate(f, a, b, "tang2022", "SSIM")["SSIM"])  # T22's MEF-SSIM is not reproduced


def test_cddfuse_ag_averages_over_all_pixels(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    m, n = f.shape
    default = evaluate(f, a, b, metrics="AG")["AG"]
    assert evaluate(f, a, b, "cddfuse", "AG")["AG"] == pytest.approx(default * (m - 1) * (n - 1) / (m * n))


def test_cddfuse_counts_undefined_vifp_as_one(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    flat = np.full_like(a, 90)
    assert math.isnan(evaluate(f, flat, b, metrics="VIF")["VIF"])
    cdd = evaluate(f, flat, b, "cddfuse", "VIF")["VIF"]
    assert cdd == pytest.approx(1.0 + vifp(b.astype(float), f.astype(float)), rel=1e-12)


def test_vifb_colour_fused_image_is_scored_per_channel(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    vis = np.dstack([b, texture(14), texture(15)])  # BGR
    fused = np.dstack([f, texture(16), texture(17)])
    r = evaluate(fused, a, vis, "vifb", "EN,SF,SSIM")
    per_channel = [evaluate(fused[:, :, k].copy(), a, vis[:, :, k].copy(), "vifb", "EN,SSIM") for k in range(3)]
    assert r["EN"] == pytest.approx(np.mean([p["EN"] for p in per_channel]), rel=1e-12)
    assert r["SSIM"] == pytest.approx(np.mean([p["SSIM"] for p in per_channel]), rel=1e-12)
    side_by_side = np.hstack([fused[:, :, 2], fused[:, :, 1], fused[:, :, 0]])
    dh, dv = np.diff(side_by_side.astype(float), axis=1), np.diff(side_by_side.astype(float), axis=0)
    assert r["SF"] == pytest.approx(math.sqrt(((dh**2).sum() + (dv**2).sum()) / side_by_side.size), rel=1e-12)


def test_grey_conversions_follow_each_lineage() -> None:
    bgr = np.dstack([texture(18), texture(19), texture(20)])
    b, g, r = (bgr[:, :, k].astype(float) for k in range(3))
    mono = np.full(bgr.shape[:2], 10, np.uint8)
    # EN of F only sees F's grey conversion.
    cv = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    matlab = np.floor(0.298936021293775 * r + 0.587043074451121 * g + 0.114020904255103 * b + 0.5)
    cdd = np.round(cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2GRAY))
    for name, grey in (("default", cv), ("tang2023", matlab), ("cddfuse", cdd)):
        expected = evaluate(grey.astype(np.uint8), mono, mono, name, "EN")["EN"]
        assert evaluate(bgr, mono, mono, name, "EN")["EN"] == expected
    assert not np.array_equal(matlab, cv)


# ---------------------------------------------------------------- API and inputs


def test_every_convention_reports_its_variants() -> None:
    for convention in CONVENTIONS.values():
        header = "\n".join(convention.header())
        assert convention.name in header and f"MI unit: {convention.mi_unit}" in header
        assert "SSIM: " in header and "PSNR: " in header
        assert set(convention.labels()) == set(convention.columns)
    assert CONVENTIONS["cddfuse"].mi_unit == "nats" and CONVENTIONS["tang2023"].mi_unit == "bits"


def test_metric_selection_and_columns(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    assert list(evaluate(f, a, b)) == [*METRIC_NAMES, "PSNR_tang"]
    assert list(evaluate(f, a, b, metrics="nlpd, qabf")) == ["Qabf", "NLPD"]
    assert list(evaluate(f, a, b, metrics=["PSNR"])) == ["PSNR", "PSNR_tang"]
    assert list(evaluate(f, a, b, "tang2023", ["PSNR"])) == ["PSNR"]
    with pytest.raises(InputError, match="unknown metric 'FMI'"):
        evaluate(f, a, b, metrics="EN,FMI")
    with pytest.raises(InputError, match="unknown metric convention"):
        evaluate(f, a, b, "tang2024")


def test_bad_arrays_raise_one_line_input_errors(trio: tuple[np.ndarray, ...]) -> None:
    a, b, f = trio
    cases = [
        ((f, a[:, :-1], b), "IR is 79x64 but fused image is 80x64 \\(WxH\\)"),
        ((f.astype(np.uint16), a, b), "fused image has dtype uint16"),
        ((f[:30], a[:30], b[:30]), "smaller than the 41x41 that VIF needs"),
        ((f[..., None].repeat(2, axis=2), a, b), "fused image has shape"),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=message) as info:
            evaluate(*args)
        assert "\n" not in str(info.value)
    # Metrics that need no large window still score small images (e.g. training crops).
    small = evaluate(f[:30, :30], a[:30, :30], b[:30, :30], metrics="EN,Qabf,SSIM,NLPD")
    assert all(math.isfinite(v) for v in small.values())


# ---------------------------------------------------------------- real pairs


@pytest.mark.parametrize("name", ["00633D", "00881N"])
def test_real_mean_and_max_fusion_are_plausible(msrs: Path, name: str) -> None:
    ir = cv2.imread(str(msrs / "ir" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(msrs / "vi" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    grey = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    mean = ((ir.astype(np.uint16) + grey + 1) // 2).astype(np.uint8)
    r = evaluate(mean, ir, vis)
    ranges = {
        "EN": (5, 8), "SD": (10, 60), "SF": (2, 30), "AG": (1, 10), "MI": (1, 6), "CC": (0.2, 1),
        "SCD": (0.5, 2), "PSNR": (10, 25), "VIF": (0.2, 1.2), "Qabf": (0.1, 0.9), "Nabf": (-1e-12, 0.01),
        "SSIM": (0.5, 1), "NLPD": (0.1, 1),
    }  # fmt: skip
    for column, (lo, hi) in ranges.items():
        assert lo < r[column] < hi, (column, r[column])
    assert r["PSNR_tang"] == pytest.approx(r["PSNR"] + DB_OFFSET, rel=1e-12)
    maximum = evaluate(np.maximum(ir, grey), ir, vis)
    assert maximum["Nabf"] > r["Nabf"]  # switching sources creates edges neither source has
    assert maximum["SD"] > r["SD"]
    for convention in CONVENTIONS:
        values = evaluate(mean, ir, vis, convention)
        undefined = {k for k, v in values.items() if not math.isfinite(v)}
        assert undefined == ({"SSIM"} if convention == "tang2022" else set()), convention


def _nabf_by_the_definition(fused: np.ndarray, src1: np.ndarray, src2: np.ndarray, border: str = "reflect") -> float:
    """Kumar's Nabf written out from docs/metrics.md, independent of the package: each image extended by one
    pixel mirrored WITHOUT repeating the edge (the reference's per_extn_im_fn, numpy 'reflect'), then the two
    Sobel/8 correlations as sums of shifted copies."""
    v = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64) / 8.0
    h = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64) / 8.0

    def gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        padded = np.pad(x.astype(np.float64), 1, mode=border)
        rows, cols = x.shape
        gv = sum(v[i, j] * padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3))
        gh = sum(h[i, j] * padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3))
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
        return np.hypot(gv, gh), alpha

    gf, af = gradient(fused)
    total_weight = 0.0
    artifact = None
    losses = []
    for src in (src1, src2):
        gx, ax = gradient(src)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where((gx == 0) | (gf == 0), 0.0, np.minimum(gx, gf) / np.maximum(gx, gf))
        a = np.abs(np.abs(ax - af) - np.pi / 2) * 2 / np.pi
        q = np.sqrt(0.9999 / (1 + np.exp(-19 * (g - 0.5))) * 0.9995 / (1 + np.exp(-22 * (a - 0.5))))
        w = np.where(gx >= 2, gx**1.5, 0.001)
        artifact = (gf > gx) if artifact is None else artifact & (gf > gx)
        losses.append((1 - q) * w)
        total_weight += w.sum()
    total_lost = (losses[0] + losses[1])[artifact].sum()
    return float(total_lost / total_weight)


@pytest.mark.parametrize("name", ["00537D", "00858N", "01023N"])
def test_default_nabf_matches_the_definition_with_the_reference_border_rule(msrs: Path, name: str) -> None:
    ir = cv2.imread(str(msrs / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(msrs / "vi" / f"{name}.png"))
    grey = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)  # the default convention's grey
    mean = (ir.astype(np.float64) + grey) / 2
    # An over-sharpened mean: edges stronger than both sources', i.e. artifacts Nabf must count (Nabf ~ 0.03).
    sharpened = np.clip(mean + 1.5 * (mean - cv2.GaussianBlur(mean, (0, 0), 2)), 0, 255).round().astype(np.uint8)
    for fused in (sharpened, np.maximum(ir, grey)):
        ours = evaluate(fused, ir, vis, "default", "Nabf")["Nabf"]
        expected = _nabf_by_the_definition(fused, ir, grey)
        assert ours > 0 and abs(ours - expected) <= 1e-6, (ours, expected)
    # The border rule is visible at this tolerance: edge repetition (MATLAB 'symmetric') is 0.1-0.3% off.
    repeated = _nabf_by_the_definition(sharpened, ir, grey, border="symmetric")
    assert abs(repeated - evaluate(sharpened, ir, vis, "default", "Nabf")["Nabf"]) > 1e-5

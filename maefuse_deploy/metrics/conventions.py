"""Named metric conventions: the correct default and the quirks of each published evaluation lineage.

A :class:`Convention` is pure data: which grey conversion, data range, log base and formula variant each metric
uses. The metric modules implement every variant; ``compute.py`` dispatches on these fields. The lineages and
their quirks are documented in ``docs/metrics.md``; the labels here are what reports print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import InputError

METRIC_NAMES: tuple[str, ...] = (
    "EN", "SD", "SF", "AG", "MI", "CC", "SCD", "PSNR", "VIF", "Qabf", "Nabf", "SSIM", "NLPD",
)  # fmt: skip

GreyMode = Literal["cv2", "cv2-float-round", "matlab", "per-channel"]


@dataclass(frozen=True)
class Convention:
    """How one lineage computes each metric. Field values name the variants implemented in the metric modules."""

    name: str
    lineage: str
    grey: GreyMode
    sd: Literal["float", "u8-saturating"] = "float"
    sf: Literal["0-255", "unit", "0-255-over-MN"] = "0-255"
    ag: Literal["(M-1)(N-1)", "MN"] = "(M-1)(N-1)"
    mi: Literal["bits", "bits-saturating", "nats", "nats-stretched"] = "bits"
    psnr: Literal["standard", "tang", "cddfuse", "vifb"] = "standard"
    vif: Literal["float", "u8-scale1", "float-nan-is-1"] = "float"
    qabf: Literal["0-255", "unit"] = "0-255"
    nabf: Literal["0-255", "unit", "swapped"] = "0-255"
    ssim: Literal["wang-mean", "matlab-dr1-mean", "skimage019-sum", "wang-sum", "mef-ssim"] = "wang-mean"
    # PSNR variants reported in extra columns named PSNR_<variant>, next to the convention's own PSNR column.
    psnr_also: tuple[str, ...] = ()
    # Metrics the lineage does not compute; they get the default definition and say so in their label.
    not_in_lineage: tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> tuple[str, ...]:
        """Result columns in report order: the 13 metrics, then the extra PSNR variants."""
        return (*METRIC_NAMES, *(f"PSNR_{variant}" for variant in self.psnr_also))

    @property
    def mi_unit(self) -> str:
        return "nats" if self.mi.startswith("nats") else "bits"

    def labels(self) -> dict[str, str]:
        """One line per metric (and per extra column) saying exactly which definition produced the number."""
        labels = {
            "EN": "Shannon entropy of the 256-bin histogram of F, bits",
            "SD": _SD[self.sd],
            "SF": _SF[self.sf],
            "AG": _AG[self.ag],
            "MI": _MI[self.mi],
            "CC": "(corr(IR,F) + corr(VIS,F)) / 2, Pearson",
            "SCD": "corr(F-VIS, IR) + corr(F-IR, VIS)",
            "PSNR": _PSNR[self.psnr],
            "VIF": _VIF[self.vif],
            "Qabf": _QABF[self.qabf],
            "Nabf": _NABF[self.nabf],
            "SSIM": _SSIM[self.ssim],
            "NLPD": "(NLPD(F,IR) + NLPD(F,VIS)) / 2, Laparra 2016, 6 levels, grey on [0,1]",
        }
        for name in self.not_in_lineage:
            labels[name] += f" [default definition: not computed by {self.name}'s lineage]"
        for variant in self.psnr_also:
            labels[f"PSNR_{variant}"] = _PSNR[variant]
        return labels

    def header(self) -> list[str]:
        """The lines every report starts with: convention, grey conversion, MI unit, SSIM and PSNR variants."""
        labels = self.labels()
        psnr = f"PSNR: {labels['PSNR']}"
        psnr += "".join(f"; PSNR_{v}: {labels[f'PSNR_{v}']}" for v in self.psnr_also)
        return [
            f"convention: {self.name} ({self.lineage})",
            f"grey: {_GREY[self.grey]}",
            f"MI unit: {self.mi_unit}",
            f"SSIM: {labels['SSIM']}",
            psnr,
        ]


_GREY = {
    "cv2": "colour inputs to grey with cv2 BGR2GRAY (0.299/0.587/0.114, uint8)",
    "cv2-float-round": "colour inputs to grey with cv2 BGR2GRAY on float32, then np.round",
    "matlab": "colour inputs to grey with MATLAB rgb2gray (0.298936/0.587043/0.114021, rounded to uint8)",
    "per-channel": "colour fused image: each channel against the matching VIS channel and IR, then averaged "
    "(SF on the channels side by side); grey fused image: sources through rgb2gray",
}
_SD = {
    "float": "population std of F on 0-255",
    "u8-saturating": "std of F with uint8 saturation of (F-mean) and its square (T22 bug, <= 15.97)",
}
_SF = {
    "0-255": "sqrt(RF^2 + CF^2), row/column difference means over M(N-1) and (M-1)N, 0-255",
    "unit": "sqrt(RF^2 + CF^2) on F/255 (T22: values in [0,1])",
    "0-255-over-MN": "sqrt(RF^2 + CF^2), both difference sums divided by MN, 0-255",
}
_AG = {
    "(M-1)(N-1)": "sum of sqrt((gx^2+gy^2)/2) over (M-1)(N-1), MATLAB gradient, 0-255",
    "MN": "mean of sqrt((gx^2+gy^2)/2) over MN, MATLAB gradient, 0-255",
}
_MI = {
    "bits": "MI(IR,F) + MI(VIS,F), 256-bin histograms, bits",
    "bits-saturating": "MI(IR,F) + MI(VIS,F), bits, joint histogram with levels 254 and 255 merged (uint8+1)",
    "nats": "MI(IR,F) + MI(VIS,F), 256-bin histograms, nats (sklearn mutual_info_score)",
    "nats-stretched": "MI(IR,F) + MI(VIS,F), nats, each image min-max stretched to 0-255 first",
}
_PSNR = {
    "standard": "10 log10(255^2 / MSE), MSE = (MSE(F,IR) + MSE(F,VIS)) / 2 on 0-255",
    "tang": "10 log10(255^2 / MSE) with MSE on [0,1] images (= standard + 48.13 dB)",
    "cddfuse": "10 log10(max(F)^2 / MSE), MSE on 0-255",
    "vifb": "20 log10(255 / sqrt(m)), m = mean over sources of sqrt(SSE)/(MN), 0-255 (size-dependent)",
}
_VIF = {
    "float": "VIFp(IR,F) + VIFp(VIS,F), LIVE multiscale pixel VIF on 0-255 floats",
    "u8-scale1": "VIFp(IR,F) + VIFp(VIS,F) with uint8 saturation of the scale-1 products (T22 bug)",
    "float-nan-is-1": "VIFp(IR,F) + VIFp(VIS,F) on 0-255 floats, an undefined VIFp counted as 1",
}
_QABF = {
    "0-255": "Xydeas-Petrovic Qabf, Sobel, 0-255 (gF where gX == gF, as in the reference code)",
    "unit": "Xydeas-Petrovic Qabf on [0,1] images (T22; gradient ties then depend on rounding)",
}
_NABF = {
    "0-255": "Kumar's modified Nabf(F; IR, VIS), 0-255, Td = 2",
    "unit": "Kumar's modified Nabf(F; IR, VIS) on [0,1] images: every weight 0.001 (T22)",
    "swapped": "Kumar's Nabf called as (IR, VIS, F): IR taken as the fused image (T23 bug)",
}
_SSIM = {
    "wang-mean": "(SSIM(F,IR) + SSIM(F,VIS)) / 2, Wang: L=255 K=(0.01,0.03), 11x11 Gaussian sigma 1.5, valid",
    "matlab-dr1-mean": "(SSIM(F,IR) + SSIM(F,VIS)) / 2, MATLAB ssim on 0-255 with DynamicRange 1 "
    "(C1=1e-4, C2=9e-4), 11x11 Gaussian sigma 1.5, replicate padding",
    "skimage019-sum": "SSIM(F,IR) + SSIM(F,VIS), skimage 0.19 defaults on float32 0-255: 7x7 uniform, "
    "sample covariance, data_range 2, 3-px border cropped",
    "wang-sum": "SSIM(F,IR) + SSIM(F,VIS), Wang: L=255 K=(0.01,0.03), 11x11 Gaussian sigma 1.5, valid",
    "mef-ssim": "not reproduced (NaN): T22 reported MEF-SSIM, which this toolkit does not implement",
}

CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention(
            name="default",
            lineage="correct definitions on 0-255 grey",
            grey="cv2",
            psnr_also=("tang",),
        ),
        Convention(
            name="tang2023",
            lineage="Linfeng-Tang/Evaluation-for-Image-Fusion after 2023-03-03, used for MaeFuse's numbers",
            grey="matlab",
            mi="bits-saturating",
            psnr="tang",
            nabf="swapped",
            ssim="matlab-dr1-mean",
            not_in_lineage=("NLPD",),
        ),
        Convention(
            name="tang2022",
            lineage="Linfeng-Tang/Evaluation-for-Image-Fusion before 2023-03-03, most 2021-22 papers",
            grey="matlab",
            sd="u8-saturating",
            sf="unit",
            mi="bits-saturating",
            psnr="tang",
            vif="u8-scale1",
            qabf="unit",
            nabf="unit",
            ssim="mef-ssim",
            not_in_lineage=("NLPD",),
        ),
        Convention(
            name="cddfuse",
            lineage="MMIF-CDDFuse utils/Evaluator.py, used for CDDFuse/DDFM/EMMA tables",
            grey="cv2-float-round",
            ag="MN",
            mi="nats",
            psnr="cddfuse",
            vif="float-nan-is-1",
            ssim="skimage019-sum",
            not_in_lineage=("Nabf", "NLPD"),
        ),
        Convention(
            name="vifb",
            lineage="VIFB benchmark MATLAB metrics",
            grey="per-channel",
            sf="0-255-over-MN",
            mi="nats-stretched",
            psnr="vifb",
            ssim="wang-sum",
            not_in_lineage=("CC", "SCD", "VIF", "Nabf", "NLPD"),
        ),
    )
}


def get_convention(convention: str | Convention) -> Convention:
    """Look a convention up by name (or pass one through); unknown names raise :class:`InputError`."""
    if isinstance(convention, Convention):
        return convention
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise InputError(
            f"unknown metric convention {convention!r}", fix=f"use one of {', '.join(CONVENTIONS)}"
        ) from None


def select_metrics(metrics: str | Sequence[str] | None) -> tuple[str, ...]:
    """Canonical metric names, in report order, from a comma-separated string or a list (None: all 13).

    Names match case-insensitively ("qabf" -> "Qabf"); unknown names raise :class:`InputError`.
    """
    if metrics is None:
        return METRIC_NAMES
    requested = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    by_lower = {name.lower(): name for name in METRIC_NAMES}
    chosen = set()
    for raw in requested:
        key = raw.strip().lower()
        if not key:
            continue
        if key not in by_lower:
            raise InputError(f"unknown metric {raw.strip()!r}", fix=f"choose from {', '.join(METRIC_NAMES)}")
        chosen.add(by_lower[key])
    if not chosen:
        raise InputError("no metric selected", fix=f"choose from {', '.join(METRIC_NAMES)}")
    return tuple(name for name in METRIC_NAMES if name in chosen)

"""The accelerator catalog: per-GPU datasheet figures, each with its source, for the perf model.

Figures are from `shared/design/hardware.md` (public pages cited there). All FLOP/s are
**dense** (NVIDIA's sparse datasheet figures halved). Prices are reference estimates with
their date and basis; on-demand and TCO/contract prices are kept apart because they differ
2-5x. Idle power is measured only for the H200 (calibration profile README); for the other
cards it is an estimate scaled by TDP and says so in its source.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfserve.catalog.errors import UnknownNameError

TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True, slots=True)
class Price:
    """A $/GPU-hour reference: value, basis ("on-demand" or "tco"), date and source."""

    usd_per_gpu_hour: float
    basis: str
    date: str
    source: str


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One GPU's datasheet figures (per GPU, even for rack-scale parts), with sources."""

    name: str
    full_name: str
    bf16_flops: float  # dense FLOP/s
    fp8_flops: float  # dense FLOP/s
    fp4_flops: float | None  # dense FLOP/s; None where the chip has no FP4 tensor path
    hbm_bytes: float
    hbm_bytes_per_s: float
    tdp_w: float
    idle_w: float
    scaleup_bytes_per_s: float  # bidirectional per-GPU NVLink/Infinity Fabric bandwidth
    scaleup_domain_gpus: int
    on_demand: Price | None
    tco: Price | None
    sources: dict[str, str]

    def flops(self, dtype: str) -> float:
        """Dense tensor FLOP/s for a compute dtype ("bf16", "fp8", "fp4")."""
        value = {"bf16": self.bf16_flops, "fp8": self.fp8_flops, "fp4": self.fp4_flops}.get(dtype)
        if value is None:
            raise ValueError(
                f"{self.name} has no dense {dtype} rate; valid: bf16, fp8"
                + (", fp4" if self.fp4_flops else "")
            )
        return value

    @property
    def price_per_gpu_hour(self) -> float:
        """On-demand reference price where one exists, else the TCO figure (see `price_basis`)."""
        price = self.on_demand or self.tco
        assert price is not None  # every catalog entry has at least one
        return price.usd_per_gpu_hour

    @property
    def price_basis(self) -> str:
        price = self.on_demand or self.tco
        assert price is not None
        return f"{price.basis}, {price.date} ({price.source})"

    @property
    def scaleup_unidir_bytes_per_s(self) -> float:
        """One direction of the scale-up link, what a ring all-reduce step can use."""
        return self.scaleup_bytes_per_s / 2


_NV_H100 = "NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100), mirrored at glennklockwood.com/garden/processors/h100 [V]"
_NV_H200 = "NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200), mirrored at lzwjava.github.io/nvidia-h200-gpu-specs-en [V]"
_VERDA = "verda.com/blog/gb300-nvl72-architecture (dense per-GPU table) [V]"
_NV_GB200 = "NVIDIA GB200 NVL72 rack spec (nvidia.com/en-us/data-center/gb200-nvl72) / 72 GPUs, sparse / 2 [V]"
_MI300X = "MI300X spec block (gpumarkets mi300x-spot page) and MLPerf v4.1 AMD system JSON [V]"
_IDLE_EST = "estimate: 124 W measured idle of the H200 (shared/calibration/README.md) x TDP / 700 W; not measured"


def _idle_estimate(tdp_w: float) -> float:
    return round(124.0 * tdp_w / 700.0, 1)


ACCELERATORS: dict[str, Accelerator] = {
    "h100": Accelerator(
        name="h100",
        full_name="NVIDIA H100 SXM",
        bf16_flops=989 * TERA,
        fp8_flops=1979 * TERA,
        fp4_flops=None,
        hbm_bytes=80 * GIGA,
        hbm_bytes_per_s=3.35 * TERA,
        tdp_w=700,
        idle_w=_idle_estimate(700),
        scaleup_bytes_per_s=900 * GIGA,
        scaleup_domain_gpus=8,
        on_demand=Price(
            2.95, "on-demand", "2026-05-20", "AIMultiple GPU index, median of 37 providers"
        ),
        tco=None,
        sources={"flops,hbm,tdp,nvlink": _NV_H100, "idle_w": _IDLE_EST},
    ),
    "h200": Accelerator(
        name="h200",
        full_name="NVIDIA H200 SXM",
        bf16_flops=989 * TERA,
        fp8_flops=1979 * TERA,
        fp4_flops=None,
        hbm_bytes=141 * GIGA,
        hbm_bytes_per_s=4.8 * TERA,
        tdp_w=700,
        idle_w=124.0,
        scaleup_bytes_per_s=900 * GIGA,
        scaleup_domain_gpus=8,
        on_demand=Price(
            4.00,
            "on-demand",
            "2026-05",
            "mid of the $3.50-4.50 specialty-cloud range (Mercatus, May 2026)",
        ),
        tco=Price(
            1.41,
            "tco",
            "2026-04",
            "NVIDIA TCO blog 'cloud market leasing reference' (contract-like rate)",
        ),
        sources={
            "flops,hbm,tdp,nvlink": _NV_H200,
            "idle_w": "measured 124 W, shared/calibration/README.md (2026-11-26)",
        },
    ),
    "b200": Accelerator(
        name="b200",
        full_name="NVIDIA B200 (HGX)",
        bf16_flops=2250 * TERA,
        fp8_flops=4500 * TERA,
        fp4_flops=9000 * TERA,
        hbm_bytes=180 * GIGA,
        hbm_bytes_per_s=7.7 * TERA,
        tdp_w=1000,
        idle_w=_idle_estimate(1000),
        scaleup_bytes_per_s=1800 * GIGA,
        scaleup_domain_gpus=8,
        on_demand=Price(
            6.00,
            "on-demand",
            "2026-03-11",
            "top of $4.50-6.00 specialised-cloud range (Lyceum); Spheron $6.03 (Mar 2026)",
        ),
        tco=None,
        sources={"flops,hbm,tdp,nvlink": _VERDA + "; HGX spec 7.7 TB/s", "idle_w": _IDLE_EST},
    ),
    "gb200": Accelerator(
        name="gb200",
        full_name="NVIDIA GB200 (per GPU, NVL72)",
        bf16_flops=2500 * TERA,
        fp8_flops=5000 * TERA,
        fp4_flops=10000 * TERA,
        hbm_bytes=186 * GIGA,
        hbm_bytes_per_s=8.0 * TERA,
        tdp_w=1200,
        idle_w=_idle_estimate(1200),
        scaleup_bytes_per_s=1800 * GIGA,
        scaleup_domain_gpus=72,
        on_demand=Price(
            10.50, "on-demand", "2026-02", "CoreWeave 4-GPU slice $42.00 / 4 (Kael Research)"
        ),
        tco=Price(2.21, "tco", "2026", "SemiAnalysis TCO (a cost, not a price)"),
        sources={
            "flops,hbm,nvlink": _NV_GB200 + "; hmc-tech.com GB200 vs H100 agrees",
            "tdp_w": "~1,200 W per GPU; superchip up to 2,700 W (hardware.md)",
            "idle_w": _IDLE_EST,
        },
    ),
    "gb300": Accelerator(
        name="gb300",
        full_name="NVIDIA GB300 (per GPU, NVL72, Blackwell Ultra)",
        bf16_flops=2500 * TERA,
        fp8_flops=5000 * TERA,
        fp4_flops=15000 * TERA,
        hbm_bytes=288 * GIGA,
        hbm_bytes_per_s=8.0 * TERA,
        tdp_w=1400,
        idle_w=_idle_estimate(1400),
        scaleup_bytes_per_s=1800 * GIGA,
        scaleup_domain_gpus=72,
        on_demand=None,
        tco=Price(
            2.65,
            "tco",
            "2026",
            "SemiAnalysis TCO (InferenceX blog); no public on-demand list found",
        ),
        sources={
            "flops,hbm,tdp,nvlink": _VERDA
            + "; 288 GB / 1,400 W: glennklockwood.com/garden/processors/B300 [V]",
            "idle_w": _IDLE_EST,
        },
    ),
    "mi300x": Accelerator(
        name="mi300x",
        full_name="AMD Instinct MI300X",
        bf16_flops=1307 * TERA,
        fp8_flops=2615 * TERA,
        fp4_flops=None,
        hbm_bytes=192 * GIGA,
        hbm_bytes_per_s=5.3 * TERA,
        tdp_w=750,
        idle_w=_idle_estimate(750),
        scaleup_bytes_per_s=896 * GIGA,
        scaleup_domain_gpus=8,
        on_demand=Price(1.99, "on-demand", "2026-05-18", "Cliff Center, median across providers"),
        tco=None,
        sources={"flops,hbm,tdp,infinity-fabric": _MI300X, "idle_w": _IDLE_EST},
    ),
}


def list_accelerators() -> list[str]:
    """Catalog names, lowercase, in table order."""
    return list(ACCELERATORS)


def get_accelerator(name: str) -> Accelerator:
    """Look up an accelerator by name (case-insensitive); unknown names list the valid ones."""
    key = name.strip().lower()
    try:
        return ACCELERATORS[key]
    except KeyError:
        raise UnknownNameError("accelerator", name, list_accelerators()) from None

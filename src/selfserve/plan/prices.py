"""$/GPU-hour on a stated basis — on-demand list price or total cost of ownership (TCO).

The same chip rents for 2–5× different prices (hyperscaler vs neocloud), and NVIDIA and
SemiAnalysis quote TCO/contract rates far below on-demand lists, so a plan must say which
basis and which date each price has. Prices come from the hardware catalog, which keeps the
two bases apart with a date and source per figure. A card with no figure on the chosen basis
gets no price (its cost columns say so) rather than one from the other basis; the user can
give one with `--price CARD=USD`.
"""

from __future__ import annotations

from collections.abc import Mapping

from selfserve.catalog import get_accelerator
from selfserve.catalog.accelerators import Price

PRICE_BASES: tuple[str, ...] = ("on-demand", "tco")


class PriceError(ValueError):
    """A malformed `--price` override or an unknown basis."""


def price_label(price: Price) -> str:
    return f"${price.usd_per_gpu_hour:.2f}/GPU-h ({price.basis}, {price.date})"


def parse_price_overrides(text: str | None) -> dict[str, float]:
    """`h100=2.1,gb300=6` → {"h100": 2.1, "gb300": 6.0}."""
    overrides: dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        card, sep, value = item.partition("=")
        try:
            usd = float(value)
        except ValueError:
            usd = -1.0
        if not sep or not card.strip() or usd < 0:
            raise PriceError(
                f"--price item {item!r}: expected CARD=USD_PER_GPU_HOUR, e.g. h100=2.5"
            )
        overrides[card.strip().lower()] = usd
    return overrides


def price_for(
    hardware: str, basis: str, overrides: Mapping[str, float] | None = None
) -> tuple[Price | None, str]:
    """(price, reason): the price of one GPU-hour of `hardware` on `basis`, or why none."""
    if basis not in PRICE_BASES:
        raise PriceError(f"price basis {basis!r} is not one of {', '.join(PRICE_BASES)}")
    key = hardware.lower()
    if overrides and key in overrides:
        return Price(overrides[key], "user", "given", "--price on the command line"), ""
    accelerator = get_accelerator(key)
    price = accelerator.on_demand if basis == "on-demand" else accelerator.tco
    if price is not None:
        return price, ""
    return None, f"the catalog has no {basis} price for {key}; give one with --price {key}=USD"

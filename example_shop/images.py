"""Product pictures, drawn as SVG from the product's name, colour and category.

Nothing is downloaded: every picture is made here, the same every time.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

#: A simple outline per category, drawn in the middle of the picture.
MOTIFS = {
    # A leaf with its vein.
    "tea": '<path d="M200 70c70 30 95 110 40 170-30 30-75 30-95 10-30-60-15-140 55-180z" fill="{light}"/>'
    '<path d="M150 245c20-50 45-110 75-150" stroke="{dark}" stroke-width="6" fill="none"/>',
    # A coffee bean.
    "coffee": '<ellipse cx="200" cy="160" rx="62" ry="88" transform="rotate(25 200 160)" fill="{light}"/>'
    '<path d="M170 85c40 40 5 110 55 150" stroke="{dark}" stroke-width="8" fill="none"/>',
    # A cup on its saucer.
    "teaware": '<rect x="130" y="100" width="120" height="110" rx="18" fill="{light}"/>'
    '<path d="M250 125c45 0 45 60 0 60" stroke="{light}" stroke-width="14" fill="none"/>'
    '<ellipse cx="190" cy="222" rx="95" ry="14" fill="{light}"/>',
    # A round biscuit.
    "treats": '<circle cx="200" cy="160" r="80" fill="{light}"/>'
    '<circle cx="175" cy="135" r="9" fill="{dark}"/><circle cx="222" cy="150" r="9" fill="{dark}"/>'
    '<circle cx="190" cy="192" r="9" fill="{dark}"/>',
}


def _shade(colour: str, factor: float) -> str:
    """``colour`` (``#rrggbb``) lightened (factor > 1) or darkened (< 1)."""
    channels = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    if factor >= 1:
        mixed = [round(c + (255 - c) * (factor - 1)) for c in channels]
    else:
        mixed = [round(c * factor) for c in channels]
    return "#" + "".join(f"{max(0, min(255, c)):02x}" for c in mixed)


def product_svg(name: str, colour: str, category: str) -> str:
    """An SVG picture (400 × 300) of a product."""
    light, dark = _shade(colour, 1.55), _shade(colour, 0.6)
    # A second hue from the name, so that products of one colour differ.
    turn = int(hashlib.sha256(name.encode()).hexdigest()[:2], 16) % 60 - 30
    motif = MOTIFS.get(category, MOTIFS["treats"]).format(light=light, dark=dark)
    initials = "".join(word[0] for word in name.split()[:2]).upper()
    label = escape(name, {'"': "&quot;"})
    return f"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 300" role="img" aria-label="{label}">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1" gradientTransform="rotate({turn} .5 .5)">
<stop offset="0" stop-color="{colour}"/><stop offset="1" stop-color="{dark}"/></linearGradient></defs>
<rect width="400" height="300" fill="url(#g)"/>
{motif}
<text x="24" y="276" font-family="Georgia, serif" font-size="28" fill="{light}"
 opacity=".85">{escape(initials)}</text>
</svg>"""

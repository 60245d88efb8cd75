"""Text forms of chainrule's LaTeX: escaping for LaTeX and Markdown, plain Unicode."""

from __future__ import annotations

import re

_TEXT_SPECIALS = {
    "\\": "\\textbackslash{}",
    "{": "\\{",
    "}": "\\}",
    "$": "\\$",
    "&": "\\&",
    "#": "\\#",
    "^": "\\^{}",
    "_": "\\_",
    "%": "\\%",
    "~": "\\~{}",
}


def _escape_text(text: str) -> str:
    """Escape plain text for LaTeX."""
    return "".join(_TEXT_SPECIALS.get(ch, ch) for ch in text)


def _escape_prose(text: str) -> str:
    """Escape text that may hold $...$ math written by chainrule itself."""
    parts = text.split("$")
    return "$".join(p if i % 2 else _escape_text(p) for i, p in enumerate(parts))


def _escape_cell(text: str) -> str:
    return _escape_prose(text) if text.startswith("$") else _escape_text(text)


def _escape_md(text: str) -> str:
    parts = text.split("$")
    out = []
    for i, p in enumerate(parts):
        out.append(p if i % 2 else re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", p))
    return "$".join(out)


_SUPER = dict(zip("0123456789+-=()nijklmtxLT×,", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱʲᵏˡᵐᵗˣᴸᵀˣ,", strict=True))
_SUB = dict(
    zip("0123456789+-=()aehijklmnoprstuvx,≠", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ,≠", strict=True)
)
#: Commands after which a space only ends the command name.
_TIGHT = frozenset({"partial", "nabla", "sigma", "delta", "Delta", "sum", "mu", "gamma", "beta"})
_COMMANDS = {
    "sigma": "σ",
    "mu": "μ",
    "gamma": "γ",
    "beta": "β",
    "epsilon": "ε",
    "delta": "δ",
    "Delta": "Δ",
    "partial": "∂",
    "odot": "⊙",
    "cdot": "·",
    "nabla": "∇",
    "sum": "Σ",
    "log": "log",
    "exp": "exp",
    "tanh": "tanh",
    "max": "max",
    "min": "min",
    "sin": "sin",
    "cos": "cos",
    "left": "",
    "right": "",
    "bigl": "",
    "bigr": "",
    "big": "",
    "quad": "  ",
    "qquad": "    ",
    "infty": "∞",
    "otimes": "⊗",
    "sim": "~",
    "times": "×",
    "leq": "≤",
    "geq": "≥",
    "neq": "≠",
    "in": "∈",
    "ldots": "…",
    "cdots": "⋯",
    "pi": "π",
    "lambda": "λ",
    "eta": "η",
    "rightarrow": "→",
    "to": "→",
}


def _group(tex: str, i: int) -> tuple[str, int]:
    """The braced group (or single token) starting at ``i``, and the index after it."""
    while i < len(tex) and tex[i] == " ":
        i += 1
    if i >= len(tex):
        return "", i
    if tex[i] == "{":
        depth, j = 0, i
        while j < len(tex):
            depth += tex[j] == "{"
            depth -= tex[j] == "}"
            if depth == 0:
                return tex[i + 1 : j], j + 1
            j += 1
        return tex[i + 1 :], len(tex)
    if tex[i] == "\\":
        j = i + 1
        while j < len(tex) and tex[j].isalpha():
            j += 1
        return tex[i : max(j, i + 2)], max(j, i + 2)
    return tex[i], i + 1


def _script(text: str, table: dict[str, str], mark: str) -> str:
    """``text`` as Unicode super- or subscripts where every character has one (spaces
    dropped, so ``m × 1`` is ``ᵐˣ¹``), else ``^(text)`` or ``_(text)``."""
    tight = text.replace(" ", "")
    if tight and all(ch in table for ch in tight) and tight.strip(",") == tight:
        return "".join(table[ch] for ch in tight)
    return f"{mark}({text})" if len(text) > 1 else f"{mark}{text}"


def _atom(text: str) -> str:
    simple = re.fullmatch(r"[\w∂σδΔŷ⁰-⁾₀-₎'()^_,]*", text)
    return text if simple and " " not in text else f"({text})"


def _is_e(before: str) -> bool:
    """True when ``before`` ends with Euler's e standing alone (not the end of a word)."""
    return before.endswith("e") and not before[-2:-1].isalnum()


def to_unicode(tex: str) -> str:
    """Render the LaTeX chainrule writes as plain Unicode text.

    Examples
    --------
    >>> to_unicode(r"\\frac{\\partial C}{\\partial w^{2}_{jk}} = a^{1}_{k} \\delta^{2}_{j}")
    '∂C/∂w²ⱼₖ = a¹ₖ δ²ⱼ'
    """
    out: list[str] = []
    i = 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\":
            token, i = _group(tex, i)
            name = token[1:]
            if name == "\\":
                out.append("\n")
                while i < len(tex) and tex[i] in " \n":
                    i += 1
            elif name in (",", ":", ";", " ", "!"):
                out.append(" " if name != "!" else "")
            elif name in ("{", "}", "$", "&", "#", "%", "_"):
                out.append(name)
            elif name == "frac":
                num, i = _group(tex, i)
                den, i = _group(tex, i)
                out.append(f"{_atom(to_unicode(num))}/{_atom(to_unicode(den))}")
            elif name in ("textcolor", "colorbox"):
                _, i = _group(tex, i)
                body, i = _group(tex, i)
                out.append(to_unicode(body))
            elif name == "mathbf" and tex[i:].lstrip().startswith("{1}"):
                _, i = _group(tex, i)
                out.append("𝟙")
            elif name == "mathbb":
                body, i = _group(tex, i)
                out.append({"R": "ℝ", "1": "𝟙"}.get(body, body))
            elif name in ("text", "textbf", "mathrm", "operatorname", "mathbf", "boxed"):
                body, i = _group(tex, i)
                out.append(to_unicode(body))
            elif name == "sqrt":
                body, i = _group(tex, i)
                out.append(f"√({to_unicode(body)})")
            elif name == "hat":
                body, i = _group(tex, i)
                out.append({"y": "ŷ", "Y": "Ŷ"}.get(body, to_unicode(body) + "\u0302"))
            elif name == "tag":
                body, i = _group(tex, i)
                out.append(f"   ({body})")
            elif name in ("begin", "end"):
                env, i = _group(tex, i)
                if env == "cases" and name == "begin":
                    end = tex.find("\\end{cases}", i)
                    end = len(tex) if end < 0 else end
                    rows = tex[i:end].split("\\\\")
                    out.append("{" + "; ".join(to_unicode(r) for r in rows) + "}")
                    i = end
            else:
                out.append(_COMMANDS.get(name, name))
                if name.isalpha() and i < len(tex) and tex[i] == " " and name in _TIGHT:
                    i += 1
        elif ch in "^_":
            body, i = _group(tex, i + 1)
            text = to_unicode(body)
            shown = _script(text, _SUPER if ch == "^" else _SUB, ch)
            if shown.startswith("^") and _is_e("".join(out)):
                # e to a power no superscript can show: exp(...), not a caret.
                out[-1] = out[-1][:-1]
                shown = f"exp({text})"
            elif shown.startswith("_") and out and out[-1] == "|":
                # A value at a point, ∇C|_y, that no subscript can show: ∇C(y).
                out[-1] = ""
                shown = f"({text})"
            out.append(shown)
        elif ch in "{}":
            i += 1
        elif ch in "&$":
            i += 1
        else:
            out.append(ch)
            i += 1
    lines = "".join(out).splitlines()
    # A space before a closing bracket is the trace of \right: log(a ) is log(a).
    lines = [re.sub(r"(?<=\S) +\)", ")", line) for line in lines]
    return "\n".join(re.sub(r"(?<=\S) {2,}(?=\S)", " ", line).rstrip() for line in lines).strip()

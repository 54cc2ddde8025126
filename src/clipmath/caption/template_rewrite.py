"""The ``template`` rewriter: rules that edit a caption with an instruction, no model.

The instruction is cut into clauses ("make it red and add a hat" -> two), each handled by the first rule that
matches it: keep, replace/swap/change X to Y, colour, remove, add, or an attribute ("is long sleeved"). A clause
no rule understands is appended ("<caption>, <clause>"): text-only retrieval then still sees the user's words.
"""

from __future__ import annotations

import re

COLOURS = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey", "gray",
    "beige", "navy", "teal", "gold", "silver", "maroon", "violet", "turquoise", "cream", "khaki", "olive",
)  # fmt: skip
_COLOUR = "(?:" + "|".join(COLOURS) + ")"
_ART = r"(?:(?:the|a|an|some)\s+)?"
_CLAUSES = re.compile(r"\s*(?:,|;|\band\b|\bbut\b|\balso\b)\s*", re.IGNORECASE)
_KEEP = re.compile(r"^(?:keep|same|no change|unchanged|nothing)\b", re.IGNORECASE)
_REPLACE = re.compile(
    rf"^(?:replace|swap|substitute)\s+{_ART}(?P<old>.+?)\s+(?:with|for|by)\s+(?P<new>.+)$", re.IGNORECASE
)
_CHANGE = re.compile(rf"^(?:change|turn|switch|make)\s+{_ART}(?P<old>.+?)\s+(?:to|into)\s+(?P<new>.+)$", re.IGNORECASE)
_INSTEAD = re.compile(rf"^(?P<new>.+?)\s+instead\s+of\s+{_ART}(?P<old>.+)$", re.IGNORECASE)
_MAKE_COLOUR = re.compile(
    rf"^(?:make|paint|colou?r|turn)\s+(?:(?:it|them|{_ART}(?P<what>.+?))\s+)?(?P<colour>{_COLOUR})$", re.IGNORECASE
)
_IS_COLOUR = re.compile(rf"^(?:is|are|in)\s+(?P<colour>{_COLOUR})(?:\s+(?:colou?r(?:ed)?))?$", re.IGNORECASE)
_REMOVE = re.compile(rf"^(?:remove|delete|drop|take away|without|no)\s+{_ART}(?P<what>.+)$", re.IGNORECASE)
_ADD = re.compile(r"^(?:add|include|put|with|has|have|show)\s+(?P<what>.+)$", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"^(?:is|are|looks?|more|less)\s+(?P<what>.+)$", re.IGNORECASE)


_COUNTED = re.compile(r"^(?:a|an|the|some|one|two|three|four|five|several|many|no)\s", re.IGNORECASE)


def _swap(caption: str, old: str, new: str) -> str | None:
    """``old`` replaced by ``new`` in ``caption`` (with its article when ``new`` brings its own), or None."""
    article = r"(?:\b(?:a|an|the|some|one)\s+)?" if _COUNTED.match(new) else ""
    pattern = re.compile(rf"{article}\b{re.escape(old)}\b", re.IGNORECASE)
    found = pattern.search(caption)
    if found is None:
        return None
    if not re.match(r"(?:a|an|the|some|one)\s", found.group(0), re.IGNORECASE):  # "a red car": keep "a red"
        new = re.sub(r"^(?:a|an|the)\s+", "", new, flags=re.IGNORECASE)
    return caption[: found.start()] + new + caption[found.end() :]


def _recolour(caption: str, colour: str, what: str | None) -> str:
    colour = colour.lower()
    if what:
        noun = re.compile(rf"(?:\b{_COLOUR}\s+)?\b{re.escape(what)}\b", re.IGNORECASE)
        if noun.search(caption):
            return noun.sub(f"{colour} {what}", caption, count=1)
    existing = re.compile(rf"\b{_COLOUR}\b", re.IGNORECASE)
    if existing.search(caption):
        return existing.sub(colour, caption, count=1)
    article = re.search(r"\b(?:a|an|the|one)\s+(?=\w)", caption, re.IGNORECASE)  # "Image of a cat": the cat
    if article is None:
        return f"{colour} {caption}"
    word = "a" if article.group(0).strip().lower() in ("a", "an") else article.group(0).strip()
    return f"{caption[: article.start()]}{word} {colour} {caption[article.end() :]}"


def _remove(caption: str, what: str) -> str:
    phrase = re.compile(rf"\s*(?:\b(?:with|and|holding|next to|near)\s+)?{_ART}\b{re.escape(what)}\b", re.IGNORECASE)
    if phrase.search(caption):
        return re.sub(r"\s{2,}", " ", phrase.sub("", caption, count=1)).strip(" ,")
    return f"{caption} without {what}"


def apply_clause(caption: str, clause: str) -> str:
    """``caption`` edited by one clause of an instruction."""
    clause = clause.strip().rstrip(".!").strip()
    if not clause or _KEEP.match(clause):
        return caption
    for pattern in (_REPLACE, _CHANGE, _INSTEAD):
        found = pattern.match(clause)
        new = re.sub(r"^(?:the)\s+", "", found["new"].strip()) if found else ""
        if found and not re.fullmatch(_COLOUR, new, re.IGNORECASE):
            swapped = _swap(caption, found["old"].strip(), new)
            return swapped if swapped is not None else f"{caption} with {new}"
        if found:  # "change the shirt to red": a colour
            return _recolour(caption, new, found["old"].strip())
    for pattern in (_MAKE_COLOUR, _IS_COLOUR):
        found = pattern.match(clause)
        if found:
            return _recolour(caption, found["colour"], found.groupdict().get("what"))
    if found := _REMOVE.match(clause):
        return _remove(caption, found["what"].strip())
    if found := _ADD.match(clause):
        return f"{caption} with {found['what'].strip()}"
    if found := _ATTRIBUTE.match(clause):
        return f"{caption} that is {found['what'].strip()}"
    return f"{caption}, {clause}"


def template_rewrite(caption: str, instruction: str) -> str:
    """``caption`` edited clause by clause by ``instruction`` (see the module docstring for the rules)."""
    edited = caption.strip().rstrip(".")
    for clause in _CLAUSES.split(instruction):
        edited = apply_clause(edited, clause)
    return edited


class TemplateRewriter:
    """The rule-based rewriter (no model, deterministic)."""

    label = "template (rules, no model)"

    def rewrite(self, caption: str, instruction: str) -> str:
        return template_rewrite(caption, instruction)

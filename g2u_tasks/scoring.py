"""Answer extraction and per-item scoring, following VLMEvalKit at ca9a644 (after PR #1175).

See /work/shared/benchmarks.md §5.1 (MCQ `can_infer`) and §5.2 (`YOrN_Extraction`). No LLM judge is used:
a failed MCQ extraction scores as 'Z' (wrong) and a yes/no 'Unknown' scores as wrong, as VLMEvalKit does
under exact matching.
"""
from __future__ import annotations

import re
import string

API_FAILURE = "Failed to obtain answer via API"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
REFUSAL_LETTER = "Z"

_MCQ_PUNCT = ".()[],:;!*#{}"  # replaced by spaces before tokenising
_LAST_TOKENS = 4  # a letter counts only if its first occurrence is among the last four tokens
# The 21 marks of VLMEvalKit's process_punctuation (colon, asterisk and apostrophe are not among them).
_YN_MARKS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_MAX_PERIODS = 32  # upstream passes re.UNICODE (=32) as sub()'s count argument


def _valid_options(options: dict[str, str]) -> dict[str, str]:
    """Option letters A-Z whose text is non-empty (VLMEvalKit drops NaN/empty option cells)."""
    return {
        k: str(v)
        for k, v in options.items()
        if k in string.ascii_uppercase and len(k) == 1 and v is not None and str(v) != ""
    }


def _infer_letter(prediction: str, letters: list[str]) -> str | None:
    """can_infer_option: a standalone, unique, late valid letter; refusals and a lone 'Z' give 'Z'."""
    if API_FAILURE in prediction:
        return None
    if any(r in prediction for r in REFUSALS):
        return REFUSAL_LETTER
    text = prediction
    for ch in _MCQ_PUNCT:
        text = text.replace(ch, " ")
    tokens = text.split()
    present = [ch for ch in letters if ch in tokens]
    if len(present) == 1:
        first = tokens.index(present[0])
        return present[0] if first >= len(tokens) - _LAST_TOKENS else None
    if not present and REFUSAL_LETTER in tokens:
        return REFUSAL_LETTER
    return None


def _infer_text(prediction: str, options: dict[str, str]) -> str | None:
    """can_infer_text: the unique option whose text occurs in a not-too-long prediction (case-insensitive)."""
    pred = prediction.lower()
    if len(pred) > 2 * sum(len(v) for v in options.values()):
        return None
    hits = [k for k, v in options.items() if v.lower() in pred]
    return hits[0] if len(hits) == 1 else None


def extract_option(prediction: str, options: dict[str, str]) -> str | None:
    """VLMEvalKit `can_infer`: letter match first, then option-text match. None = nothing inferred."""
    prediction = str(prediction)
    valid = _valid_options(options)
    return _infer_letter(prediction, list(valid)) or _infer_text(prediction, valid)


def _process_punctuation(text: str) -> str:
    """VLMEvalKit process_punctuation: drop or blank out marks, then drop periods not touching a digit."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _YN_MARKS:
        # Decisions look at the original text, so the order of marks does not matter.
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if touches_space or has_digit_comma else " ")
    return _LONE_PERIOD.sub("", out, count=_MAX_PERIODS)


def extract_yes_no(prediction: str) -> str:
    """VLMEvalKit YOrN_Extraction: 'Yes' | 'No' | 'Unknown' from whole words after punctuation rules."""
    words = _process_punctuation(str(prediction).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "Yes"
    if has_no and not has_yes:
        return "No"
    return "Unknown"


def score(question_type: str, prediction: str, answer: str | None, options: dict[str, str]) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one item; no judge is consulted."""
    if question_type == "mcq":
        extracted = extract_option(prediction, options) or REFUSAL_LETTER  # no judge => 'Z' (wrong)
        gold = answer.strip() if answer is not None else None
    elif question_type == "yes_no":
        extracted = extract_yes_no(prediction)
        gold = answer.strip().capitalize() if answer is not None else None  # 'yes' / 'YES' -> 'Yes'
    elif question_type in ("open", "numeric"):
        # Placeholder until benchmark-specific scorers arrive: exact match after strip + casefold.
        extracted = str(prediction).strip()
        gold = answer.strip().casefold() if answer is not None else None
        return extracted, gold is not None and extracted.casefold() == gold
    else:
        raise ValueError(f"unknown question_type: {question_type!r}")
    return extracted, gold is not None and extracted == gold


def accuracy(correct: list[bool]) -> float:
    """Fraction of correct items in 0..1 (VLMEvalKit report_acc units)."""
    if not correct:
        raise ValueError("accuracy of an empty list")
    return sum(bool(c) for c in correct) / len(correct)

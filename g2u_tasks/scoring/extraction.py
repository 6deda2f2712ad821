"""Answer extraction rules, following VLMEvalKit at ca9a644 (after PR #1175): MCQ `can_infer`,
`YOrN_Extraction`, the authors' `can_infer`, MathVista `post_check`, Q-Spatial parsing and OCRBench.

Rules only: the per-item scorers (g2u_tasks.scoring.items) apply them and call the judge
(g2u_tasks.scoring.judge) where the reference would.
"""
from __future__ import annotations

import math
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


# ---- selectable rule sets ------------------------------------------------------------------------

RULE_SETS = ("vlmevalkit", "authors", "judge", "qspatial", "ocr", "lmms-eval")
_AUTHORS_PUNCT = ".()[],:;!*#{}\"'"  # the authors' list adds both quote marks
_AUTHORS_REFUSALS = (*REFUSALS, API_FAILURE)


def extract_authors(prediction: str) -> str | None:
    """The authors' `can_infer` (MyVQABench / VisThink): a letter A-Z, 'Yes', 'No', 'Z', or None.

    Any standalone capital letter counts (not only valid options), and it must be the only capital-letter
    token in the text (repeats count: "B ... B" is two). A leading "A" followed by more words is taken as
    the article. Then case-insensitive yes/no on the same punctuation rules (not process_punctuation).
    """
    prediction = str(prediction)
    if any(r in prediction for r in _AUTHORS_REFUSALS):
        return REFUSAL_LETTER
    text = prediction
    for ch in _AUTHORS_PUNCT:
        text = text.replace(ch, " ")
    tokens = text.split()
    letters = [t for t in tokens if len(t) == 1 and t in string.ascii_uppercase]
    if len(letters) == 1:
        article = letters[0] == "A" and tokens.index("A") == 0 and len(tokens) > 1
        if not article:
            return letters[0]
    # upstream's "only Z present" branch is unreachable: Z is itself one of the capital letters above
    words = text.lower().split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "Yes"
    if has_no and not has_yes:
        return "No"
    return None


def extract(rule_set: str, prediction: str, options: dict[str, str], question_type: str) -> str | None:
    """The answer a rule set reads from a raw prediction; None when it infers nothing (judge or wrong).

    vlmevalkit: mcq -> `can_infer` letter (or 'Z'); yes_no -> 'Yes'/'No' (VLMEvalKit's 'Unknown' -> None).
    authors: the authors' parser, whatever the question type. qspatial: the distance in cm as text.
    ocr: the prediction itself (OCRBench scores by substring, see `ocrbench_hit`). judge: always None.
    """
    if rule_set == "vlmevalkit":
        if question_type == "mcq":
            return extract_option(prediction, options)
        if question_type == "yes_no":
            found = extract_yes_no(prediction)
            return None if found == "Unknown" else found
        return None
    if rule_set == "authors":
        return extract_authors(prediction)
    if rule_set == "qspatial":
        value = parse_qspatial(prediction)
        return None if value is None else repr(value)
    if rule_set == "ocr":
        return str(prediction)
    if rule_set in ("judge", "lmms-eval"):  # lmms-eval rules are per sub-task (unig2u_* below)
        return None
    raise ValueError(f"unknown rule set {rule_set!r}; expected one of {RULE_SETS}")


# ---- MathVista post_check (utils/mathvista.py) ---------------------------------------------------


def mathvista_prefetch(prediction: str, *, question_type: str, answer_type: str, answer: str,
                       answer_option: str | None, choices: dict[str, str]) -> str | None:
    """`post_check(line, prefetch=True)`: what MathVista stores without calling the judge, else None.

    multi_choice: any `can_infer` letter, right or wrong (or 'Z'). integer/float: the number, only when
    it parses and equals the answer exactly. Upstream tests the result for truth, so a correct 0 or 0.0
    is not pre-fetched either (it goes to the judge).
    """
    prediction = str(prediction)
    if question_type == "multi_choice":
        return extract_option(prediction, choices)
    if answer_type not in ("integer", "float"):
        return "None" if str(answer) == "None" else None  # upstream compares str(None) with the answer
    number = _mathvista_number(prediction, answer_type)
    if number is None or number != _mathvista_number(str(answer), answer_type) or not number:
        return None
    return str(number)


def mathvista_hit(res: str | None, *, question_type: str, answer_type: str, answer: str,
                  answer_option: str | None, choices: dict[str, str]) -> bool:
    """`post_check(line, prefetch=False)` on the stored or judge-extracted answer `res`.

    Exact int/float equality (no rounding to `precision`); text and list answers compare str(None) with
    the answer, so they are never right (a VLMEvalKit quirk kept on purpose).
    """
    if question_type == "multi_choice":
        return extract_option(str(res), choices) == answer_option
    if answer_type in ("integer", "float"):
        got = _mathvista_number(str(res), answer_type)
        return got is not None and got == _mathvista_number(str(answer), answer_type)
    return str(None) == str(answer)


def _mathvista_number(text: str, answer_type: str) -> int | float | None:
    """Python's int()/float() on text, None where they raise ValueError; None for other answer types."""
    try:
        if answer_type == "integer":
            return int(text)
        if answer_type == "float":
            return float(text)
    except ValueError:
        return None
    return None


# ---- Q-Spatial (image_vqa.py QSpatial) -----------------------------------------------------------

_QSPATIAL_CM = {
    **dict.fromkeys(("meters", "meter", "m", "metre", "metres"), 100.0),
    **dict.fromkeys(("centimeters", "centimeter", "cm"), 1.0),
    **dict.fromkeys(("feet", "foot", "ft"), 30.48),
    **dict.fromkeys(("inch", "inches", "in"), 2.54),
    "mm": 0.1,
}
_SCALAR = re.compile(r"scalar{([^}]*)}")
_UNIT = re.compile(r"distance_unit{([^}]*)}")
_NUMBER = re.compile(r"\d+\.?\d*")  # no sign, no exponent, as upstream
QSPATIAL_EPS = 1e-8  # upstream adds this to every value before taking ratios


def qspatial_multiplier(unit: str) -> float:
    """cm per unit (case-insensitive, not stripped); an unknown unit gives 0, as upstream."""
    return _QSPATIAL_CM.get(str(unit).lower(), 0.0)


def parse_qspatial(prediction: str) -> float | None:
    """Distance in cm from the last `\\scalar{}` (mean of its numbers) and the last `\\distance_unit{}`.

    None where upstream raises IndexError (no scalar or no unit box). A scalar box without digits gives
    NaN (numpy's mean of nothing), which never passes a threshold.
    """
    if not isinstance(prediction, str):
        return None  # upstream crashes on a non-text (NaN) prediction
    scalars, units = _SCALAR.findall(prediction), _UNIT.findall(prediction)
    if not scalars or not units:
        return None
    numbers = [float(x) for x in _NUMBER.findall(scalars[-1])]
    value = sum(numbers) / len(numbers) if numbers else math.nan
    return value * qspatial_multiplier(units[-1])


def qspatial_ratio(pred_cm: float | None, gt_cm: float) -> float:
    """max(pred/gt, gt/pred) after upstream's +1e-8; a parse failure counts as a prediction of 1e-8."""
    pred = (QSPATIAL_EPS if pred_cm is None else pred_cm) + QSPATIAL_EPS
    gt = gt_cm + QSPATIAL_EPS
    return max(pred / gt, gt / pred) if not (math.isnan(pred) or math.isnan(gt)) else math.nan


# ---- OCRBench (image_vqa.py OCRBench) -------------------------------------------------------------

OCRBENCH_HMER = "Handwritten Mathematical Expression Recognition"


def ocrbench_hit(prediction: str, answers: list[str] | str, category: str) -> bool:
    """A hit if any gold answer is a substring of the prediction (HMER: spaces removed, case kept)."""
    if isinstance(answers, str):
        from g2u_tasks.benchmarks.loaders import parse_list_cell  # safe list parser (no eval); heavy module

        parsed = parse_list_cell(answers) if answers.strip().startswith("[") else None
        answers = [str(a) for a in parsed] if parsed is not None else [answers]
    predict = str(prediction)
    for answer in answers:
        if category == OCRBENCH_HMER:
            gold = answer.strip().replace("\n", " ").replace(" ", "")
            text = predict.strip().replace("\n", " ").replace(" ", "")
        else:
            gold = answer.lower().strip().replace("\n", " ")
            text = predict.lower().strip().replace("\n", " ")
        if gold in text:
            return True
    return False


# ---- lmms-eval UniG2U sub-tasks (tasks/unig2u/*/utils.py) ----------------------------------------

RELAXED_TOLERANCE = 0.05  # ChartQA: a number within 5% of a non-zero gold number is right


def _relaxed_number(text: str) -> float | None:
    """Python's float() reading (whitespace, exponents, inf/nan accepted); a trailing % divides by 100."""
    try:
        return float(text[:-1].rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def unig2u_relaxed(prediction: str, gold: str) -> bool:
    """ChartQA relaxed accuracy: both numbers and gold non-zero -> relative error <= 5%; otherwise
    case-insensitive equality of the unstripped texts."""
    pred, target = _relaxed_number(prediction), _relaxed_number(gold)
    if pred is not None and target:
        return abs(pred - target) / abs(target) <= RELAXED_TOLERANCE
    return prediction.lower() == gold.lower()


_MMSI_NARROWING = (re.compile(r"``([^`]*)``"), re.compile(r"`([^`]*)`"), re.compile(r"\{([^}]*)\}"))
_MMSI_LETTER = re.compile(r"\b[A-D]\b(?!\s[a-zA-Z])")


def unig2u_mmsi_letter(prediction: str) -> str | None:
    """MMSI-Bench: narrow to the first ``...``, then `...`, then {...} (each applied to what is left),
    then the first standalone A-D not followed by a space and a letter; None when there is none."""
    text = prediction
    for pattern in _MMSI_NARROWING:
        hit = pattern.search(text)
        if hit:
            text = hit.group(1)
    hit = _MMSI_LETTER.search(text)
    return hit.group() if hit else None


VP_LETTERS = ("A", "B", "C", "D")
# Tried in order; within a pattern the LAST match that is a valid letter (either case) wins.
_VP_PATTERNS = (r"Answer:\s*\(([A-Za-z])\)", r"(?<!Final )Answer:\s*([A-Za-z])", r"Answer:\s*([A-Za-z])",
                r"\(([A-Za-z])\)")
_VP_PADDED = (r"([A-Za-z])\)", r"\{([A-Za-z])\}", r"\$([A-Za-z])\$", r" ([A-Da-d])\.")  # on " " + stripped
_VP_SHORT = r" ([A-Da-d])"  # only for a padded reply of at most 5 characters


def _last_valid(pattern: str, text: str) -> str | None:
    return next((m for m in reversed(re.findall(pattern, text)) if m.upper() in VP_LETTERS), None)


def unig2u_visualpuzzles_letter(prediction: str, choices: list[str] | None) -> str | None:
    """VisualPuzzles `parse_response` on the stripped reply: answer markers, bracketed letters, then
    option texts ("answer: <text>" first, else the option whose text occurs last). The letter keeps
    its case (the verdict compares lower-cased); None when nothing is found."""
    text = prediction.strip()
    for pattern in _VP_PATTERNS:
        if (found := _last_valid(pattern, text)) is not None:
            return found
    padded = " " + text.strip()
    for pattern in _VP_PADDED:
        if (found := _last_valid(pattern, padded)) is not None:
            return found
    if len(padded) <= 5 and (found := _last_valid(_VP_SHORT, padded)) is not None:
        return found
    if not choices:
        return None
    lowered = padded.lower()
    for letter, option in zip(VP_LETTERS, choices):
        if f"answer: {option}" in lowered or f"answer:{option}" in lowered:
            return letter
    best, best_at = None, -1
    for letter, option in zip(VP_LETTERS, choices):
        at = padded.rfind(option)
        if at > best_at:
            best, best_at = letter, at
    return best

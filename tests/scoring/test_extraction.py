"""Tests of g2u_tasks.scoring.extraction; expected values worked out by hand from VLMEvalKit's rules."""
import pytest

import math

from g2u_tasks.scoring.extraction import (extract, extract_authors, extract_option, extract_yes_no, mathvista_hit,
                                          mathvista_prefetch, ocrbench_hit, parse_qspatial, qspatial_multiplier,
                                          qspatial_ratio)

# Option texts sum to 10 + 11 + 14 + 11 = 46 characters, so the text-fallback cap is 92.
OPTS = {"A": "red circle", "B": "blue square", "C": "green triangle", "D": "yellow star"}


# ---- MCQ letter matching (can_infer_option) ----

@pytest.mark.parametrize(
    "pred, expected",
    [
        ("The answer is B.", "B"),  # 4 tokens, B at index 3: within the last four
        ("B. The red cube on the left side of the image is the largest", None),  # B at 0 of 13 tokens; no option text
        ("B", "B"),
        ("(C)", "C"),
        ("**Answer:** [D].", "D"),  # * : [ ] . become spaces
        ("I think it is A", "A"),  # 'I' is not a valid option letter, so only A counts
        ("E or B", "B"),  # E is not an option; B at index 2 of 3 tokens
        ("Among these I pick B over the others", "B"),  # 8 tokens, B at index 4 = 8 - 4
        ("Among these I pick B over all the others", None),  # 9 tokens, B at index 4 < 9 - 4
        ("B is wrong so B", None),  # the first occurrence (index 0 of 5) decides
        ("It's A blue square", "A"),  # A counts as a letter (quantifier check only with VERBOSE)
    ],
)
def test_letter_position_and_tokens(pred, expected):
    assert extract_option(pred, OPTS) == expected


@pytest.mark.parametrize(
    "pred",
    [
        "the answer is b",  # lower-case letters never count; no option text inside
        "A or B",  # two distinct valid letters
        "'C'",  # apostrophes are not punctuation here: token is "'C'"
        "The answer is E.",  # E is not a valid option letter
    ],
)
def test_no_letter_match(pred):
    assert extract_option(pred, OPTS) is None


def test_empty_option_is_not_a_valid_letter():
    opts = {**OPTS, "E": ""}
    assert extract_option("The answer is E", opts) is None
    assert extract_option("The answer is D", opts) == "D"


def test_refusal_gives_z():
    assert extract_option("Cannot determine the answer from the image.", OPTS) == "Z"
    assert extract_option("I can't process this file.", OPTS) == "Z"
    assert extract_option("Cannot determine the answer, maybe B", OPTS) == "Z"  # refusal is checked first


def test_api_failure_gives_no_match():
    assert extract_option("Failed to obtain answer via API", OPTS) is None
    assert extract_option("Failed to obtain answer via API. B", OPTS) is None  # letter step skipped


def test_z_token():
    assert extract_option("Z", OPTS) == "Z"
    assert extract_option("The answer is Z.", OPTS) == "Z"
    assert extract_option("Z is my pick among all of these listed options here", OPTS) == "Z"  # no position rule for Z
    assert extract_option("B or Z", OPTS) == "B"  # a valid letter wins over Z


# ---- MCQ text fallback (can_infer_text) ----

def test_option_text_only():
    assert extract_option("it is a red circle", OPTS) == "A"
    assert extract_option("It is a BLUE SQUARE", OPTS) == "B"  # matching is case-insensitive


def test_text_fallback_after_early_letter():
    # B is too early to count as a letter; the text then names option A (63 chars <= 92).
    assert extract_option("B. The red circle on the left side of the image is the largest", OPTS) == "A"


def test_option_text_too_long():
    pred = "it is a red circle" + " because" * 20  # 178 chars > 92
    assert extract_option(pred, OPTS) is None


def test_length_cap_boundary():
    opts = {"A": "cat", "B": "dog"}  # cap = 2 * 6 = 12
    assert extract_option("the cat here", opts) == "A"  # 12 chars: allowed
    assert extract_option("the cat here!", opts) is None  # 13 chars: too long


def test_ambiguous_option_text():
    assert extract_option("a red circle", {"A": "red", "B": "red circle"}) is None  # both texts occur


def test_options_not_mutated():
    opts = {"A": "Red Circle", "B": "Blue"}
    extract_option("red circle", opts)
    assert opts == {"A": "Red Circle", "B": "Blue"}


# ---- yes/no (YOrN_Extraction + process_punctuation) ----

@pytest.mark.parametrize(
    "pred, expected",
    [
        ("Yes, there is no dog", "Unknown"),  # both words present
        ("yes.", "Yes"),  # lone period removed
        ("**Yes**", "Unknown"),  # asterisks untouched: word is "**yes**"
        ("No,", "No"),  # comma touches no space -> replaced by a space
        ("yes:", "Unknown"),  # colons untouched
        ("'yes'", "Unknown"),  # apostrophes untouched
        ("`yes`", "Yes"),  # backtick replaced by a space
        ('"No"', "No"),
        ("YES", "Yes"),
        ("NO!", "No"),
        ("Yes\n", "Yes"),
        ("", "Unknown"),
        ("(yes)", "Yes"),
        ("yes.no", "Unknown"),  # period removed -> "yesno"
        ("Yes. No.", "Unknown"),
        ("3.5 yes", "Yes"),  # period between digits kept
        ("There are many dogs?yes", "Yes"),  # '?' replaced by a space
        ("There are 1,000 dogs?yes", "Unknown"),  # digit,digit: '?' deleted -> "dogsyes"
        ("No but yes,sir", "Unknown"),  # ',' replaced by a space -> "yes sir"
        ("No , but yes,sir", "No"),  # " ," somewhere: every ',' deleted -> "yessir"
        ("yes" + "." * 32, "Yes"),  # all 32 periods removed
        ("yes" + "." * 40, "Unknown"),  # only 32 removed: word "yes........"
    ],
)
def test_extract_yes_no(pred, expected):
    assert extract_yes_no(pred) == expected


# ---- the authors' parser ----

@pytest.mark.parametrize(
    "pred, expected",
    [
        ("The answer is B.", "B"),
        ("B. The red cube on the left side is the largest", "B"),  # no position rule
        ("I think B", None),  # 'I' is a capital letter too: two letters
        ("B. so B", None),  # repeats count: two letters
        ("E", "E"),  # any capital letter, not only valid options
        ("A cat is on the mat", None),  # leading 'A' + more words = article; no yes/no either
        ("A", "A"),  # a lone 'A' is an answer
        ("The answer is A", "A"),  # 'A' not first
        ("'C'", "C"),  # apostrophes are punctuation here
        ("**Yes**", "Yes"),
        ("yes:", "Yes"),
        ('"No"', "No"),
        ("Yes, there is no dog", None),
        ("Z", "Z"),
        ("Cannot determine the answer", "Z"),
        ("Failed to obtain answer via API", "Z"),  # unlike VLMEvalKit, the API failure is a refusal
        ("the answer is b", None),
        ("", None),
    ],
)
def test_extract_authors(pred, expected):
    assert extract_authors(pred) == expected


def test_extract_rule_sets():
    assert extract("vlmevalkit", "I think B", OPTS, "mcq") == "B"
    assert extract("authors", "I think B", OPTS, "mcq") is None
    assert extract("vlmevalkit", "Yes, there is no dog", {}, "yes_no") is None  # 'Unknown' -> None
    assert extract("vlmevalkit", "yes.", {}, "yes_no") == "Yes"
    assert extract("vlmevalkit", "42", {}, "numeric") is None
    assert extract("judge", "B", OPTS, "mcq") is None
    assert extract("ocr", "Hello", {}, "open") == "Hello"
    assert extract("qspatial", r"\scalar{2} \distance_unit{m}", {}, "numeric") == "200.0"
    with pytest.raises(ValueError):
        extract("fuzzy", "B", OPTS, "mcq")


# ---- MathVista post_check ----

MV_CHOICES = {"A": "3/11", "B": "8/11", "C": "6/11"}


def _mv(qtype, atype, answer, option=None):
    return dict(question_type=qtype, answer_type=atype, answer=answer, answer_option=option, choices=MV_CHOICES)


def test_mathvista_prefetch_multi_choice_keeps_any_letter():
    args = _mv("multi_choice", "text", "8/11", "B")
    assert mathvista_prefetch("The answer is (C).", **args) == "C"  # wrong, but stored without the judge
    assert mathvista_hit("C", **args) is False
    assert mathvista_prefetch("It is 8/11", **args) == "B"  # option text
    assert mathvista_hit("B", **args) is True
    assert mathvista_prefetch("no idea at all, sorry, really no idea whatsoever here", **args) is None


def test_mathvista_numbers_exact():
    assert mathvista_prefetch("14", **_mv("free_form", "integer", "14")) == "14"
    assert mathvista_prefetch(" 14 ", **_mv("free_form", "integer", "14")) == "14"  # int() strips spaces
    assert mathvista_prefetch("14.0", **_mv("free_form", "integer", "14")) is None  # int('14.0') fails
    assert mathvista_prefetch("15", **_mv("free_form", "integer", "14")) is None  # wrong -> judge
    assert mathvista_prefetch("0", **_mv("free_form", "integer", "0")) is None  # a right 0 is falsy upstream
    assert mathvista_prefetch("1.5", **_mv("free_form", "float", "1.50")) == "1.5"
    assert mathvista_hit("1.45", **_mv("free_form", "float", "1.4")) is False  # no rounding to precision
    assert mathvista_hit("", **_mv("free_form", "float", "1.4")) is False


def test_mathvista_list_and_text_never_right():
    assert mathvista_prefetch("[2007, 2008]", **_mv("free_form", "list", "[2007, 2008]")) is None
    assert mathvista_hit("[2007, 2008]", **_mv("free_form", "list", "[2007, 2008]")) is False
    assert mathvista_hit("cat", **_mv("free_form", "text", "cat")) is False


# ---- Q-Spatial ----

def test_parse_qspatial():
    assert parse_qspatial(r"about \scalar{1.5} \distance_unit{meters}") == 150.0
    assert parse_qspatial(r"\scalar{2-3} \distance_unit{feet}") == pytest.approx(2.5 * 30.48)  # mean of 2 and 3
    assert parse_qspatial(r"\scalar{9} \scalar{4} \distance_unit{cm} \distance_unit{inches}") == 4 * 2.54  # last
    assert parse_qspatial(r"\scalar{7} \distance_unit{parsecs}") == 0.0  # unknown unit -> x0
    assert parse_qspatial(r"\scalar{7} \distance_unit{ meters}") == 0.0  # not stripped upstream
    assert parse_qspatial(r"\scalar{7}") is None  # no unit box
    assert parse_qspatial("7 meters") is None
    assert math.isnan(parse_qspatial(r"\scalar{seven} \distance_unit{m}"))
    assert qspatial_multiplier("MM") == 0.1


def test_qspatial_ratio():
    assert qspatial_ratio(140.0, 100.0) == pytest.approx(1.4)
    assert qspatial_ratio(50.0, 100.0) == pytest.approx(2.0)
    assert qspatial_ratio(None, 100.0) > 1e9  # parse failure: prediction 1e-8
    assert math.isnan(qspatial_ratio(math.nan, 100.0))


# ---- OCRBench ----

def test_ocrbench_hit():
    assert ocrbench_hit("The sign says HELLO world", "['hello']", "Regular Text Recognition")
    assert not ocrbench_hit("HELL0", ["hello"], "Regular Text Recognition")
    hmer = "Handwritten Mathematical Expression Recognition"
    assert ocrbench_hit("x ^ { 2 }", ["x^{2}"], hmer)  # spaces removed
    assert not ocrbench_hit("X^{2}", ["x^{2}"], hmer)  # case kept

"""Optional LLM judge through an OpenAI-compatible endpoint, with VLMEvalKit's prompts and retry rules.

Prompts are verbatim copies of VLMEvalKit ca9a644 (utils/multiple_choice.py `build_prompt`, utils/yorn.py
`YOrN_match_prompt`, utils/mmvet.py, utils/mathvista.py) and of the authors' myvqabench.py
(`build_prompt_GPT`, `build_prompt_judge`). A request is sent the way VLMEvalKit's OpenAIWrapper sends it:
one user message with a text part, n=1, temperature (default 0), max_tokens (default 2048). A call that
fails for good returns VLMEvalKit's failure message instead of raising, as upstream does.
"""
from __future__ import annotations

import logging
import random
import re
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

from g2u_tasks.backends.openai_client import OpenAIClient, OpenAIRequestError
from g2u_tasks.scoring.extraction import extract_authors, extract_option, extract_yes_no

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

FAIL_MSG = "Failed to obtain answer via API."
DEFAULT_MAX_TOKENS = 2048
MMVET_MAX_TOKENS = 3
MATHVISTA_MAX_TOKENS = 128


@dataclass(frozen=True)
class JudgeSpec:
    """Where the judge lives. The key is read from the environment variable `api_key_env` only."""

    base_url: str
    model: str | None = None  # None: the scoring suite's reference judge model
    api_key_env: str = "OPENAI_API_KEY"
    max_retries: int = 2  # HTTP retries per call: run.py gives the judge retry=3 attempts
    timeout_s: float = 300.0  # OpenAIWrapper default
    concurrency: int = 4  # run.py api_nproc
    backoff_s: float = 1.0


class Judge:
    """One judge model on one endpoint; counts its calls."""

    def __init__(self, spec: JudgeSpec, default_model: str | None = None):
        """Model: spec.model, else `default_model` (the scoring suite's reference judge)."""
        model = spec.model or default_model
        if model is None:
            raise ValueError("no judge model: set JudgeSpec.model")
        self.model = model
        self.client = OpenAIClient({"base_url": spec.base_url, "api_key_env": spec.api_key_env,
                                    "max_retries": spec.max_retries, "timeout_s": spec.timeout_s,
                                    "concurrency": spec.concurrency, "backoff_s": spec.backoff_s})
        self.calls = 0
        self._lock = threading.Lock()

    def generate(self, prompt: str, *, temperature: float = 0.0, max_tokens: int = DEFAULT_MAX_TOKENS,
                 index: int = 0) -> str:
        """The stripped reply, or FAIL_MSG when the call fails or the reply is empty (as OpenAIWrapper)."""
        with self._lock:
            self.calls += 1
        body = {"model": self.model, "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                "n": 1, "temperature": temperature, "max_tokens": max_tokens}
        try:
            reply = self.client.post_json("/chat/completions", body, index)
            content = reply["choices"][0]["message"]["content"]
        except OpenAIRequestError as exc:
            log.warning("judge call failed: %s", exc)
            return FAIL_MSG
        except (KeyError, IndexError, TypeError):
            log.warning("judge reply %d has no choices[0].message.content", index)
            return FAIL_MSG
        content = str(content or "").strip()
        return content or FAIL_MSG

    def working(self) -> bool:
        """VLMEvalKit's `working()` probe: a 'hello' must get a reply."""
        return self.generate("hello", index=-1) != FAIL_MSG

    def map(self, fn: Callable[[int, T], R], items: list[T]) -> list[R]:
        return self.client.map(fn, items)

    def close(self) -> None:
        self.client.close()


# ---- prompts (verbatim) --------------------------------------------------------------------------


def option_str(options: dict[str, str]) -> str:
    """VLMEvalKit `build_option_str`."""
    return "There are several options: \n" + "".join(f"{k}. {v}\n" for k, v in options.items())


def mcq_prompt(question: str, options: dict[str, str], prediction: str) -> str:
    tmpl = (
        'You are an AI assistant who will help me to match '
        'an answer with several options of a single-choice question. '
        'You are provided with a question, several options, and an answer, '
        'and you need to find which option is most similar to the answer. '
        'If the meaning of all options are significantly different from the answer, output Z. '
        'Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n'
        'Example 1: \n'
        'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
        'Answer: a cute teddy bear\nYour output: A\n'
        'Example 2: \n'
        'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
        'Answer: Spider\nYour output: Z\n'
        'Example 3: \n'
        'Question: {}?\nOptions: {}\nAnswer: {}\nYour output: '
    )
    return tmpl.format(question, option_str(options), prediction)


def yes_no_prompt(question: str, prediction: str) -> str:
    tmpl = (
        'You are an AI assistant who will help me to match an answer with two options of a question. '
        'The options are only Yes / No. '
        'You are provided with a question and an answer, '
        'and you need to find which option (Yes / No) is most similar to the answer. '
        'If the meaning of all options are significantly different from the answer, output Unknown. '
        'Your should output a single word among the following 3 choices: Yes, No, Unknown.\n'
        'Example 1: \n'
        "Question: Is the word in this image 'Hello'?\nAnswer: The word in this image is 'Hello'.\nYour output: Yes\n"
        'Example 2: \n'
        "Question: Is the word in this image 'Hello'?\n"
        "Answer: The word in this image is not 'Hello'.\nYour output: No\n"
        'Example 3: \n'
        'Question: {}?\nAnswer: {}\nYour output: '
    )
    return tmpl.format(question, prediction)


_MMVET_FEWSHOT = """
Compare the ground truth and prediction from AI models, to give a correctness score for the prediction.
<AND> in the ground truth means it is totally right
only when all elements in the ground truth are present in the prediction,
and <OR> means it is totally right when any one element in the ground truth is present in the prediction.
The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right).
Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme talks about Iceland and Greenland. It's pointing out that despite their names,
Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme is using humor to point out the misleading nature of Iceland's and Greenland's names.
Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow.
The text 'This is why I have trust issues' is a playful way to suggest
that these contradictions can lead to distrust or confusion.
The humor in this meme is derived from the unexpected contrast between the names of the countries
and their actual physical characteristics. | 1.0
"""


def mmvet_prompt(question: str, answer: str, prediction: str) -> str:
    gt = str(answer).replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return _MMVET_FEWSHOT + "\n" + " | ".join([question, gt, str(prediction), ""])


_MATHVISTA_EXAMPLES = (
    """
Hint: Please answer the question requiring an integer answer and provide the final value,
e.g., 1, 2, 3, at the end.\n
Question: Which number is missing?\n
Model response: The number missing in the sequence is 14.\n
Extracted answer: 14
""",
    """
Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value,
e.g., 1.2, 1.3, 1.4, at the end.\n
Question: What is the fraction of females facing the camera?\n
Model response: The fraction of females facing the camera is 0.6,
which means that six out of ten females in the group are facing the camera.\n
Extracted answer: 0.6
""",
    """
Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value,
e.g., 1.23, 1.34, 1.45, at the end.\n
Question: How much money does Luca need to buy a sour apple candy and a butter-scotch candy? (Unit: $)\n
Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.\n
Extracted answer: 1.45
""",
    """
Hint: Please answer the question requiring a Python list as an answer and provide the final list,
e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.\n
Question: Between which two years does the line graph saw its maximum peak?\n
Model response: The line graph saw its maximum peak between 2007 and 2008.\n
Extracted answer: [2007, 2008]
""",
    """
Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n
Question: What fraction of the shape is blue?\n
Choices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5\n
Model response: The correct answer is (B) 8/11.\n
Extracted answer: B
""",
)


def mathvista_prompt(question: str, prediction: str) -> str:
    """Upstream's typo ("respone") and missing newline before "Extracted answer:" are kept."""
    prompt = """
Please read the following example.
Then extract the answer from the model response and type it at the end of the prompt.\n
"""
    for example in _MATHVISTA_EXAMPLES:
        prompt += example + "\n"
    return prompt + question + "\n" + "Model respone: " + str(prediction) + "Extracted answer:"


def authors_option_prompt(question: str, prediction: str) -> str:
    """The authors' `build_prompt_GPT` (MyVQABench / VisThink)."""
    tmpl = (
        'You are an AI assistant who will help me to match '
        'an answer with several options of a single-choice question. '
        'You are provided with a question, several options, and an answer, '
        'and you need to find which option is most similar to the answer. '
        'If the meaning of all options are significantly different from the answer, output Z. '
        'Your should output a single uppercase character in A, B, C, D (if they are valid options) or yes or no, '
        'and Z. \n'
        'Example 1: \n'
        'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
        'Answer: a cute teddy bear\nYour output: A\n'
        'Example 2: \n'
        'Question: Is the right grey box smaller than the left grey box? Please answer with YES or NO.\n'
        'Answer: Yes, the right grey box is smaller than the left grey box.\nYour output: Yes\n'
        'Example 3: \n'
        'Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n'
        'Answer: Spider\nYour output: Z\n'
        'Example 4: \n'
        'Question: {}?\n\nAnswer: {}\nYour output: '
    )
    return tmpl.format(question, prediction)


def authors_verdict_prompt(question: str, prediction: str, answer: str) -> str:
    """The authors' strict 1/0 evaluator (`build_prompt_judge`)."""
    return f"""You will act as a strict, impartial evaluator (Judge).
Your task is to evaluate whether the [Prediction] correctly answers the [Input Question], based on the provided [Ground Truth] (standard answer).

**Evaluation Criteria:**

* **1 (Correct):** The [Prediction] is factually correct and aligns with the core meaning of the [Ground Truth]. Trivial wording differences are acceptable, but all key information points must be included and accurate.
* **0 (Incorrect):** The [Prediction] contains any factual errors, omits key information from the [Ground Truth], adds irrelevant or incorrect information, or contradicts the meaning of the [Ground Truth].

**Evaluation Task:**
    [Input Question]: {question}
    [Ground Truth]: {answer}
    [Prediction]: {prediction}
**Output:**

Provide your judgment and reasoning strictly in the following format, with no additional text or explanations.

<result>
[Enter 1 or 0 here]
</result>

<think>
briefly explaining why the [Prediction] was judged as 1 or 0]
</think>
"""  # noqa: E501


# ---- judge procedures (one item each) ------------------------------------------------------------

MCQ_TRIES = 3
YES_NO_TRIES = 5
MMVET_TRIES = 5
MATHVISTA_TRIES = 5
AUTHORS_TRIES = 3


def judge_option(judge: Judge, question: str, options: dict[str, str], prediction: str, seed_key: str,
                 index: int = 0) -> tuple[str, str]:
    """`extract_answer_from_item`'s judge part: 3 tries, each reply read by `can_infer`.

    After 3 misses upstream picks a random option or 'Z'; here the draw is seeded by `seed_key` so a rerun
    gives the same letter.
    """
    prompt = mcq_prompt(question, options, prediction)
    for _ in range(MCQ_TRIES):
        reply = judge.generate(prompt, index=index)
        if FAIL_MSG in reply:
            continue
        letter = extract_option(reply, options)
        if letter:
            return letter, reply
    pool = list(options) + (["Z"] if "Z" not in options else [])
    return random.Random(seed_key).choice(pool), "Failed to predict, thus randomly generate one."


def judge_yes_no(judge: Judge, question: str, prediction: str, index: int = 0) -> str:
    """`YOrN_auxeval`: up to 5 calls at temperature 0.5*i; 'Unknown' when none reads as yes or no."""
    prompt = yes_no_prompt(question, prediction)
    for i in range(YES_NO_TRIES):
        found = extract_yes_no(judge.generate(prompt, temperature=0.5 * i, index=index))
        if found != "Unknown":
            return found
    return "Unknown"


def judge_mmvet(judge: Judge, question: str, answer: str, prediction: str, index: int = 0) -> tuple[float, str]:
    """`MMVet_auxeval`: up to 5 calls (temperature 0, 0.5, ... 2.0, max_tokens 3) until a float in [0, 1]."""
    prompt = mmvet_prompt(question, answer, prediction)
    log_lines = []
    for i in range(MMVET_TRIES):
        reply = judge.generate(prompt, temperature=0.5 * i, max_tokens=MMVET_MAX_TOKENS, index=index)
        try:
            grade = float(reply)
        except ValueError:
            log_lines.append(f"Try {i}: output is {reply}, failed to parse.")
            continue
        if grade < 0 or grade > 1:
            log_lines.append(f"Try {i}: output is {reply}, invalid score: {grade}.")
            continue
        return grade, "Succeed"
    return 0.0, "\n".join([*log_lines, "All 5 retries failed."])


def judge_mathvista(judge: Judge, question: str, prediction: str, index: int = 0) -> str:
    """`MathVista_auxeval`'s judge part: the extracted answer text, '' after 5 failed calls."""
    prompt = mathvista_prompt(question, prediction)
    for i in range(MATHVISTA_TRIES):
        reply = judge.generate(prompt, temperature=0.5 * i, max_tokens=MATHVISTA_MAX_TOKENS, index=index)
        if FAIL_MSG not in reply:
            return reply
    return ""


def judge_authors_option(judge: Judge, question: str, prediction: str, index: int = 0) -> str:
    """The authors' `extract_answer_from_item`: 3 tries read by their parser; then a fixed 'A'."""
    prompt = authors_option_prompt(question, prediction)
    for _ in range(AUTHORS_TRIES):
        reply = judge.generate(prompt, index=index)
        if FAIL_MSG in reply:
            continue
        found = extract_authors(reply)
        if found:
            return found
    return "A"


_RESULT_TAG = re.compile(r"<result>(.*?)</result>", re.DOTALL)


def judge_authors_verdict(judge: Judge, question: str, prediction: str, answer: str,
                          index: int = 0) -> tuple[bool, str]:
    """The authors' evaluator: one call (their retry loop returns on the first pass); 1/0 in <result>.

    A missing tag is 0, as upstream. A tag that is not an integer crashes upstream; here it is 0 and logged.
    """
    reply = judge.generate(authors_verdict_prompt(question, prediction, answer), index=index)
    match = _RESULT_TAG.search(reply)
    if not match:
        return False, "no <result> tag"
    try:
        return int(match.group(1).strip()) != 0, "Succeed"
    except ValueError:
        log.warning("judge verdict %r is not an integer; scored 0", match.group(1).strip())
        return False, f"non-integer verdict {match.group(1).strip()!r}"

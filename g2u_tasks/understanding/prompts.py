"""Understanding prompts per mode.

The question text follows VLMEvalKit: multiple-choice items get its MCQ template (hint, question,
one "X. text" line per option, instruction); other items use the raw question.
Modes: baseline (original only), concat (original + thought), replace (thought for the last image),
replace_gated (replace only when the thought's padded-square PSNR clears the gate, else baseline),
concat_conversation (the thought as the model's own earlier turn, as the reference code does).
"""
from __future__ import annotations

from PIL import Image

from g2u_tasks.thoughts.families import EditFamily
from g2u_tasks.thoughts.fidelity import psnr_padded_square
from g2u_tasks.records import Item
from g2u_tasks.backends.understanders.base import Turn, UnderstandRequest

MCQ_INSTRUCTION = "Please select the correct answer from the options above. \n"
CONCAT_PREFACE = (
    "The last image is a visual thought: an edited version of the image before it ({description}). "
    "Use all images to answer.\n"
)
EDIT_FIRST = "Please edit the image first ({description}), then answer."


def question_text(item: Item) -> str:
    if item.question_type != "mcq" or not item.options:
        return item.question
    parts = []
    if item.hint:
        parts.append(f"Hint: {item.hint}\n")
    parts.append(f"Question: {item.question}\n")
    parts.append("Options:\n")
    parts.extend(f"{k}. {v}\n" for k, v in item.options.items())
    parts.append(MCQ_INSTRUCTION)
    return "".join(parts)


def build_prompt(
    item: Item,
    images: list[Image.Image],
    mode: str,
    thought: Image.Image | None = None,
    family: EditFamily | None = None,
    instruction: str | None = None,
) -> tuple[list[Image.Image], str]:
    """Images and text for one single-turn call. The thought stands in for the item's last image.
    `instruction`: a model-written edit instruction (self/planner), shown instead of the family's
    description."""
    text = question_text(item)
    if mode == "baseline":
        return list(images), text
    _need_thought(item, mode, thought, family)
    if mode == "concat":
        return [*images, thought], CONCAT_PREFACE.format(description=_edit_note(family, instruction)) + text
    if mode == "replace":
        return [*images[:-1], thought], text
    raise ValueError(f"{item.ref}: unknown mode {mode!r}")


def _need_thought(item: Item, mode: str, thought, family) -> None:
    if thought is None or family is None:
        raise ValueError(f"{item.ref}: mode {mode} needs a thought and its family")


def _edit_note(family: EditFamily, instruction: str | None) -> str:
    return (instruction or family.description).strip().rstrip(".")


def conversation(item: Item, images: list[Image.Image], thought: Image.Image, family: EditFamily,
                 instruction: str | None = None) -> list[Turn]:
    """user: original + question + "edit first"; assistant: [thought]; user: original + question."""
    text = question_text(item)
    ask = f"{text.rstrip()}\n{EDIT_FIRST.format(description=_edit_note(family, instruction))}"
    return [Turn("user", list(images), ask), Turn("assistant", [thought]), Turn("user", list(images), text)]


def build_request(
    item: Item,
    images: list[Image.Image],
    mode: str,
    thought: Image.Image | None = None,
    family: EditFamily | None = None,
    instruction: str | None = None,
    gate_psnr_db: float = 25.0,
) -> tuple[UnderstandRequest, str, bool | None]:
    """(request, prompt text as recorded, gate_passed) for any mode; gate_passed is None unless gated."""
    if mode == "concat_conversation":
        _need_thought(item, mode, thought, family)
        req = UnderstandRequest.from_turns(conversation(item, images, thought, family, instruction))
        return req, req.prompt, None
    gate = None
    if mode == "replace_gated":
        _need_thought(item, mode, thought, family)
        gate = psnr_padded_square(images[-1], thought) > gate_psnr_db  # strict, as the reference
        mode = "replace" if gate else "baseline"
    imgs, text = build_prompt(item, images, mode, thought, family, instruction)
    return UnderstandRequest(images=imgs, prompt=text), text, gate

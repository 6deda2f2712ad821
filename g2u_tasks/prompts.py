"""Understanding prompts for the three modes (DESIGN §3).

The question text follows VLMEvalKit: multiple-choice items get its MCQ template (hint, question,
one "X. text" line per option, instruction); other items use the raw question.
"""
from __future__ import annotations

from PIL import Image

from g2u_tasks.families import EditFamily
from g2u_tasks.records import Item

MCQ_INSTRUCTION = "Please select the correct answer from the options above. \n"
CONCAT_PREFACE = (
    "The last image is a visual thought: an edited version of the image before it ({description}). "
    "Use all images to answer.\n"
)


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
) -> tuple[list[Image.Image], str]:
    """Images and text for one understanding call. The thought stands in for the item's last image."""
    text = question_text(item)
    if mode == "baseline":
        return list(images), text
    if thought is None or family is None:
        raise ValueError(f"{item.ref}: mode {mode} needs a thought and its family")
    if mode == "concat":
        return [*images, thought], CONCAT_PREFACE.format(description=family.description.rstrip(".")) + text
    if mode == "replace":
        return [*images[:-1], thought], text
    raise ValueError(f"{item.ref}: unknown mode {mode!r}")
